"""``ringrun --trace FILE``: merge the workers' timeline files into FILE when the job ends.

Also a command for merging by hand (rank files copied from several hosts, or the merged
files of several hosts' launchers)::

    python -m launcher.trace OUTPUT [PART ...]    # PARTs default to OUTPUT.rank*.trace

The merged file is a Chrome trace (``{"traceEvents": [...]}``): open it in
https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import sys

from ringrt._observe.merge import merge, merge_rank_files, rank_files


def finish(path: str, console) -> None:
    """Merge ``path.rank*.trace`` into ``path`` and say where it is (after failures too)."""
    try:
        summary = merge_rank_files(path)
    except (OSError, ValueError) as exc:
        console.note(f"trace: could not merge {path}.rank*.trace: {exc}")
        return
    if summary is None:
        console.note(f"trace: no rank wrote a timeline (did the workers call "
                     f"init_process_group?); {path} not written")
        return
    console.note(f"trace: {path} ({summary['events']} spans of ranks "
                 f"{_span(summary['ranks'])}); open it in https://ui.perfetto.dev")


def _span(ranks: list[int]) -> str:
    if ranks and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"{ranks[0]}-{ranks[-1]}" if len(ranks) > 1 else str(ranks[0])
    return ", ".join(map(str, ranks))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    output, parts = argv[0], argv[1:] or rank_files(argv[0])
    if not parts:
        print(f"no parts given and no {output}.rank*.trace found", file=sys.stderr)
        return 1
    summary = merge(parts, output)
    print(f"{output}: {summary['events']} spans of ranks {_span(summary['ranks'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
