"""Where the repository and the benchmark records are, wherever a benchmark module sits.

``RESULTS`` holds the current record of each benchmark (the one the docs cite and the
benchmark writes by default); ``ARCHIVE`` the earlier and one-off runs, named
``YYYY-MM-DD-NAME.json`` (see ``benchmarks/README.md``).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
ARCHIVE = RESULTS / "archive"
