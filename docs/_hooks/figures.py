"""MkDocs hook: publish the benchmark figures where the records live.

The plots are written by the benchmarks next to their JSON records under
``benchmarks/results/``; the docs link them as ``figures/NAME.png`` so that one file serves
both, and a figure cannot drift from the record it names.
"""

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def on_files(files, config):
    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"figures/{png.name}", abs_src_path=str(png)))
    return files
