"""``ringrun --trace FILE``: merge the workers' timeline files into FILE when the job ends.

With ``--nnodes`` > 1 each host's launcher writes its own ranks to ``FILE.node{K}.json``.
A command merges by hand (those files, or rank files copied from several hosts)::

    python -m ringrt_launcher.trace OUTPUT [PART ...]    # PARTs default to OUTPUT.rank*.trace

The merged file is a Chrome trace (``{"traceEvents": [...]}``): open it in
https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import os
import sys

from ringrt_launcher.flight import rank_span
from ringrt._observe.merge import merge, rank_files
from ringrt._observe.timeline import rank_file


def output_path(path: str, nnodes: int, node_rank: int) -> str:
    """FILE on one host; FILE.node{K}.json per host with several (each launcher merges its
    own ranks: their files may be on disks the others cannot see)."""
    return path if nnodes == 1 else f"{path}.node{node_rank}.json"


def finish(path: str, console, ranks, nnodes: int = 1, node_rank: int = 0) -> None:
    """Merge this host's ranks' files of trace ``path`` and say where the result is (after
    failures too)."""
    parts = [f for f in (rank_file(path, r) for r in ranks) if os.path.exists(f)]
    if not parts:
        console.note(f"trace: no rank wrote a timeline (did the workers call "
                     f"init_process_group?); {path} not written")
        return
    output = output_path(path, nnodes, node_rank)
    try:
        summary = merge(parts, output)
    except (OSError, ValueError) as exc:
        console.note(f"trace: could not merge {path}.rank*.trace: {exc}")
        return
    for part in parts:
        os.remove(part)
    console.note(f"trace: {output} ({summary['events']} spans of ranks "
                 f"{rank_span(summary['ranks'])}); open it in https://ui.perfetto.dev")
    if nnodes > 1:
        console.note("trace: merge the hosts' files into one with: "
                     f"python -m ringrt_launcher.trace {path} {path}.node*.json")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    output, parts = argv[0], argv[1:] or rank_files(argv[0])
    if not parts:
        print(f"no parts given and no {output}.rank*.trace found", file=sys.stderr)
        return 1
    summary = merge(parts, output)
    print(f"{output}: {summary['events']} spans of ranks {rank_span(summary['ranks'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
