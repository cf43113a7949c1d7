"""The tree is the data flow: each layer of ringrt imports only the layers above it.

launcher -> store -> transport (_comm) -> process group -> algorithms -> collectives ->
ddp / optim / data. ``ringrt`` never imports ``ringrt_launcher``, and only ``ringrt.torch`` may
import torch (``import ringrt`` must work, and stay light, without it).
"""

import ast
from pathlib import Path

import pytest

RINGRT = Path(__file__).resolve().parents[2] / "ringrt"

# Top-level parts of ringrt, in data-flow order. A part may import parts of its own or an
# earlier layer; importing the package root (the public API) is for the training layer on.
LAYERS = [
    {"errors", "_settings", "_env", "_deadline", "_dtypes", "_reduce_ops", "_curve", "_observe",
     "_native"},
    {"store"},
    {"_comm"},
    {"_process_group"},
    {"_algorithms"},
    {"distributed", "_validate", "_objects", "tuning"},
    {"collectives", "p2p", "object_collectives", "debug", "_latency_parts"},
    {"_flat", "_compress", "optim", "localsgd", "ddp", "checkpoint", "data", "elastic"},
    {"torch"},
]
LAYER_OF = {part: index for index, parts in enumerate(LAYERS) for part in parts}
PUBLIC_API_USERS = LAYER_OF["ddp"]


def _part(path: Path) -> str:
    """The top-level part of ringrt a file belongs to ("_comm", "collectives", ...)."""
    relative = path.relative_to(RINGRT)
    return relative.parts[0].removesuffix(".py")


def _imports(path: Path):
    """Yield every module name ``path`` imports (relative imports resolved)."""
    package = ["ringrt", *path.relative_to(RINGRT).parent.parts]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base != "ringrt":
                yield base
                continue
            for alias in node.names:     # from ringrt import _objects (a module), all_reduce
                is_module = (RINGRT / f"{alias.name}.py").exists() or (RINGRT / alias.name).is_dir()
                yield f"ringrt.{alias.name}" if is_module else "ringrt"


def _modules():
    return sorted(p for p in RINGRT.rglob("*.py") if p.name != "__init__.py" or p.parent != RINGRT)


def test_every_part_has_a_layer():
    parts = {_part(p) for p in _modules()}
    assert parts - set(LAYER_OF) == set(), "add new parts of ringrt to LAYERS"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(RINGRT)))
def test_imports_flow_one_way(path):
    own = LAYER_OF[_part(path)]
    wrong = []
    for name in _imports(path):
        if name == "ringrt":
            if own < PUBLIC_API_USERS:
                wrong.append(f"{name} (the public API, for the training layer and below)")
            continue
        if not name.startswith("ringrt."):
            continue
        part = name.split(".")[1]
        if part in LAYER_OF and LAYER_OF[part] > own:
            wrong.append(f"{name} (layer {LAYER_OF[part]}, this file is in layer {own})")
    assert wrong == [], f"{path.relative_to(RINGRT)} imports below its layer: {wrong}"


def test_ringrt_never_imports_launcher_and_only_ringrt_torch_imports_torch():
    offenders = []
    for path in sorted(RINGRT.rglob("*.py")):
        in_torch_bridge = _part(path) == "torch"
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "ringrt_launcher" or (top == "torch" and not in_torch_bridge):
                offenders.append(f"{path.relative_to(RINGRT)}: {name}")
    assert offenders == []


# Where the world's machinery (sockets, sentinel, mailbox, executor: ``_process_group._Comm``)
# may be reached as ``.comm``: the group and the comm layer. Everything else asks the group
# (``ProcessGroup.global_rank``, ``lost_members()``, ``check_usable()``, ``layout``, ``p2p``...).
# ``_latency_parts`` (behind ``ringrt.debug``) times the comm layer's own steps of an op alone.
COMM_OWNERS = ("_comm", "_process_group", "_latency_parts")


def test_nothing_outside_the_group_reaches_through_comm():
    reaches = []
    for path in _modules():
        if _part(path) in COMM_OWNERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "comm":
                reaches.append(f"{path.relative_to(RINGRT)}:{node.lineno}")
    assert reaches == [], f"ask the ProcessGroup instead of reaching through .comm: {reaches}"
