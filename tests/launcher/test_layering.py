"""The tree is the data flow: the runtime must not depend on its launcher."""

import ast

import pytest

from tests.launcher._ringrun import REPO

pytestmark = pytest.mark.timeout(30)


def test_ringrt_never_imports_launcher():
    offenders = []
    for path in sorted((REPO / "ringrt").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names
                          if n == "launcher" or n.startswith("launcher.")]
    assert offenders == []
