"""Comments in the code say why, not what one run measured on one machine, nor when.

Absolute times do not carry over between machines (README), so a figure in a comment goes
stale; figures and their dates live in docs/performance-notes.md, history in commit messages.
This checks the comments and docstrings of ringrt/, ringrt_launcher/ and _ringrt_autoload.py
for dates (YYYY-MM, YYYY-MM-DD), references to "issue N", and measured figures (a number with
a time or bandwidth unit, a ratio like "2.7x", a percentage). The rest of the code -
benchmarks/, tests/ and examples/ (Python comments and docstrings, YAML comments), the
Makefile's comments and .ci/'s - is checked for dates and "issue N" only: benchmarks talk
about figures by design. Strings in code are not comments, so this file's planted examples
pass. Run it as a script to list what it finds, in this checkout or another one.
"""

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

DATE = re.compile(r"(?<![\w.-])20\d\d-(?:0[1-9]|1[0-2])(?:-[0-3]\d)?(?![\w-]|\.\d)")
ISSUE = re.compile(r"\bissues? #?\d+", re.IGNORECASE)
# A number with a unit of time or bandwidth ("285 us", "~2 GB/s", "1.3-1.4 ms", "90+ MB/s"),
# a ratio ("2.7x gloo", "~4x faster"), seconds with a fraction ("~0.1 s") or a percentage
# ("rms error 9 %"). Not "1 Gbit/s" (a link's rated speed), nor a bare unit ("timeout in
# ms"), nor "3 x 2 ranks", "0x3FF" or a format ("{:.0%}").
FIGURE = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?\+?\s?(?:µs|us|ns|ms|[GM]i?B/s)(?![\w/])"
    r"|(?<![\w.])\d+(?:\.\d+)?x(?![\w{])"
    r"|(?<![\w.])\d+\.\d+\s?s\b"
    r"|(?<![\w.])\d+(?:\.\d+)?\s?%")
RULES = {"date": DATE, "issue": ISSUE, "figure": FIGURE}
HISTORY = ("date", "issue")     # the rules for code outside the package: no figure rule


def prose_lines(source: str):
    """Yield (line number, text) of every comment and docstring line in ``source``."""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.body and isinstance(node.body[0], ast.Expr):
            value = node.body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                for offset, line in enumerate(value.value.splitlines()):
                    yield value.lineno + offset, line


def hash_comment_lines(source: str):
    """Yield (line number, text) of every ``#`` comment line (Makefile, shell, YAML)."""
    for lineno, line in enumerate(source.splitlines(), 1):
        if line.lstrip().startswith("#"):
            yield lineno, line


def findings(source: str, name: str = "<string>", rules=tuple(RULES), lines=prose_lines):
    """Every ``name:line: rule: text`` in ``source``'s comments and docstrings, in order."""
    found = set()
    for lineno, text in lines(source):
        for rule in rules:
            if RULES[rule].search(text):
                found.add((lineno, rule, text.strip()))
    return [f"{name}:{lineno}: {rule}: {text}" for lineno, rule, text in sorted(found)]


def files(root: Path = ROOT):
    """(path, rules, how to find its comments) for every file checked."""
    for tree in (root / "ringrt", root / "ringrt_launcher", root / "_ringrt_autoload.py"):
        for path in [tree] if tree.is_file() else sorted(tree.rglob("*.py")):
            yield path, tuple(RULES), prose_lines
    for tree in (root / "benchmarks", root / "tests", root / "examples"):
        for path in sorted(tree.rglob("*.py")):
            yield path, HISTORY, prose_lines
        for path in sorted([*tree.rglob("*.yaml"), *tree.rglob("*.yml")]):
            yield path, HISTORY, hash_comment_lines
    for path in [root / "Makefile", *sorted((root / ".ci").glob("*"))]:
        if path.is_file():
            yield path, HISTORY, hash_comment_lines


def tree_findings(root: Path = ROOT):
    return [hit for path, rules, lines in files(root)
            for hit in findings(path.read_text(), str(path.relative_to(root)), rules, lines)]


def test_comments_carry_no_dates_issue_numbers_or_measured_figures():
    hits = tree_findings()
    assert not hits, (
        "comments and docstrings should say why and name the benchmark that checks it; "
        "figures and dates go to docs/performance-notes.md, history to commit messages:\n"
        + "\n".join(hits))


PLANTED = {
    "date": ["# measured 2026-11-26.", "# (2026-11, quiet machine)", "x = 1  # fitted 2025-01-31"],
    "issue": ["# see issue 5", "# refused (issues 10 and 21)", "# Issue #12's target"],
    "figure": ["# 285 us whole vs 488 us chunked", "# ~2 GB/s per copy", "# 67 vs 90+ MB/s",
               "# took 1.3-1.4 ms", "# 2.7x gloo", "# ~4x faster", "# costs --help ~0.1 s",
               "# rms error 9 %", "# 6-16% faster", "# 1.5 µs a call", "# 119.5 MiB/s"],
}
ORDINARY = [
    '"""Waits ``timeout`` seconds (a float, in s); sizes in bytes, KiB or MiB."""',
    "MASK = 0x3FFFFF  # ticket bits; a 3 x 2 lab; a 1 Gbit/s link; the slot holds 16 MiB",
    "# steps of 2(n-1)/n; every rank issues the same collectives; timeout in ms; 64 KiB-1 MiB",
    "# the cluster benchmark (make bench), cluster-hier-3x{2,4}-*.json, 4 B-4 KiB, 50 ppm",
    'MESSAGE = "within 5 s: 2026-11-26, issue 5, 20 ms"  # a string in code is no comment',
    'def f(ms: int):\n    """``ms``: the interval in ms; {share:.0%} of it."""',
]


@pytest.mark.parametrize("rule, line", [(rule, line) for rule, lines in PLANTED.items()
                                        for line in lines])
def test_the_checker_catches_what_it_is_for(rule, line):
    assert [hit.split(": ")[1] for hit in findings(line)] == [rule]


def test_the_checker_catches_docstrings_too():
    source = 'def f():\n    """Two levels are 2.7x faster (see issue #7)."""\n'
    assert findings(source) == ["<string>:2: figure: Two levels are 2.7x faster (see issue #7).",
                                "<string>:2: issue: Two levels are 2.7x faster (see issue #7)."]


@pytest.mark.parametrize("source", ORDINARY)
def test_the_checker_leaves_ordinary_text_alone(source):
    assert findings(source) == []


def test_outside_the_package_only_dates_and_issue_numbers_count():
    source = '"""Times all_reduce (issue 5): 2.7x gloo."""\nx = 1  # run 2026-11-26, ~2 GB/s\n'
    assert findings(source, rules=HISTORY) == [
        "<string>:1: issue: Times all_reduce (issue 5): 2.7x gloo.",
        "<string>:2: date: # run 2026-11-26, ~2 GB/s"]


def test_makefile_and_yaml_comments_are_read_too():
    source = 'bench:\n\t# issue 5\'s points\n\techo "issue 5"  # 2026-11\n# see issue 7\n'
    assert findings(source, rules=HISTORY, lines=hash_comment_lines) == [
        "<string>:2: issue: # issue 5's points", "<string>:4: issue: # see issue 7"]


def test_the_whole_tree_is_scanned():
    checked = {str(path.relative_to(ROOT)) for path, _, _ in files()}
    assert {"ringrt/__init__.py", "benchmarks/collectives/targets.py", "Makefile", ".ci/run",
            "tests/unit/test_comments.py", "examples/train.py"} <= checked


if __name__ == "__main__":      # python tests/unit/test_comments.py [CHECKOUT]: list, count
    hits = tree_findings(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT)
    print("\n".join(hits))
    for rule in RULES:
        print(f"{rule}: {sum(f': {rule}: ' in hit for hit in hits)} lines", file=sys.stderr)
