"""Collectives over Python objects (msgpack + NumPy, never pickle), as in torch.

The objects are encoded on the sender (``TypeError`` there if something cannot be carried)
and travel as variable-length byte messages straight to the ranks that need them.
"""

from __future__ import annotations

from ringrt import _objects, _validate
from ringrt._comm.wire import OP_CODES
from ringrt._process_group import NonMember, OpSpec, ProcessGroup
from ringrt.distributed import resolve
from ringrt.errors import ProtocolError

Group = ProcessGroup | NonMember | None     # None: the default group


def _group(group, name):
    pg = resolve(group, name)
    return None if isinstance(pg, NonMember) else pg


def _run(pg, name: str, root: int, body):
    return pg.run(OpSpec(name, OP_CODES[name], 0, -1, root), body)


def _encode(pg, name: str, value) -> bytes:
    try:
        return _objects.encode(value)
    except TypeError as exc:
        raise TypeError(f"{name}: {exc} (on rank {pg.global_rank})") from None


def _list_arg(pg, name: str, value, length: int | None, arg: str) -> list:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        want = "a list" if length is None else f"a list of {length} entries"
        error = (TypeError if not isinstance(value, list) else ValueError)(
            f"{name}: {arg} must be {want}, got {type(value).__name__}"
            f"{'' if not isinstance(value, list) else f' of {len(value)}'} on rank "
            f"{pg.global_rank}")
        raise error
    return value


def _received(ex, name: str, peer: int):
    """The object group rank ``peer`` sent; a payload ringrt could not have encoded is a
    ProtocolError naming both ranks."""
    try:
        return _objects.decode(ex.recv(peer))
    except ProtocolError as exc:
        raise ProtocolError(f"{name}: rank {ex.group.members[peer]} sent rank "
                            f"{ex.group.global_rank} a bad payload: {exc}") from None


def _root(pg, name, value, arg):
    return _validate.root(name, value, pg.members, pg.global_rank, arg)


def broadcast_object_list(object_list: list, src: int = 0, group: Group = None) -> None:
    """Replace every entry of ``object_list`` with ``src``'s entries (lists of equal length)."""
    name = "broadcast_object_list"
    pg = _group(group, name)
    if pg is None:
        return
    _list_arg(pg, name, object_list, None, "object_list")
    root = _root(pg, name, src, "src")
    payload = _encode(pg, name, object_list) if pg.rank == root else None

    def body(ex):
        if ex.rank == root:
            for peer in range(ex.size):
                if peer != root:
                    ex.send(peer, payload)
            return
        received = _received(ex, name, root)
        if not isinstance(received, list):
            raise ProtocolError(f"{name}: rank {src} sent a {type(received).__name__}, not a "
                                f"list of objects, to rank {pg.global_rank}")
        if len(received) != len(object_list):
            raise ValueError(f"{name}: rank {src} sent {len(received)} objects but rank "
                             f"{pg.global_rank}'s object_list has {len(object_list)} entries")
        object_list[:] = received
    _run(pg, name, root, body)


def all_gather_object(object_list: list, obj: object, group: Group = None) -> None:
    """Fill ``object_list`` (one entry per rank) with every rank's ``obj``."""
    name = "all_gather_object"
    pg = _group(group, name)
    if pg is None:
        return
    _list_arg(pg, name, object_list, pg.size, "object_list")
    payload = _encode(pg, name, obj)

    def body(ex):
        for peer in range(ex.size):
            if peer != ex.rank:
                ex.send(peer, payload)
        object_list[ex.rank] = _objects.decode(payload)
        for peer in range(ex.size):
            if peer != ex.rank:
                object_list[peer] = _received(ex, name, peer)
    _run(pg, name, -1, body)


def gather_object(obj: object, object_gather_list: list | None = None, dst: int = 0,
                  group: Group = None) -> None:
    """Collect every rank's ``obj`` into ``object_gather_list`` on ``dst``."""
    name = "gather_object"
    pg = _group(group, name)
    if pg is None:
        return
    root = _root(pg, name, dst, "dst")
    if pg.rank == root:
        _list_arg(pg, name, object_gather_list, pg.size, "object_gather_list")
    payload = _encode(pg, name, obj)

    def body(ex):
        if ex.rank != root:
            ex.send(root, payload)
            return
        assert object_gather_list is not None       # the root's was checked by _list_arg
        object_gather_list[root] = _objects.decode(payload)
        for peer in range(ex.size):
            if peer != root:
                object_gather_list[peer] = _received(ex, name, peer)
    _run(pg, name, root, body)


def scatter_object_list(output_list: list, input_list: list | None = None, src: int = 0,
                        group: Group = None) -> None:
    """Rank j's ``output_list[0]`` receives ``src``'s ``input_list[j]`` (torch names them
    ``scatter_object_output_list`` / ``scatter_object_input_list``; these follow the spec)."""
    name = "scatter_object_list"
    pg = _group(group, name)
    if pg is None:
        return
    _list_arg(pg, name, output_list, None, "output_list")
    if not output_list:
        raise ValueError(f"{name}: output_list needs at least one entry on "
                         f"rank {pg.global_rank}")
    root = _root(pg, name, src, "src")
    payloads: list[bytes] = []
    if pg.rank == root:
        _list_arg(pg, name, input_list, pg.size, "input_list")
        payloads = [_encode(pg, name, x) for x in input_list or ()]

    def body(ex):
        if ex.rank == root:
            for peer in range(ex.size):
                if peer != root:
                    ex.send(peer, payloads[peer])
            output_list[0] = _objects.decode(payloads[root])
            return
        output_list[0] = _received(ex, name, root)
    _run(pg, name, root, body)

