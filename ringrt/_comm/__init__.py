"""This rank's communication machinery, below the process group.

    wire.py        the data-plane message header (a fixed 40-byte struct)
    transport.py   this rank's sockets: one inbox, one outbox per peer (ipc:// or tcp://)
    shm.py         same-host shared-memory slots and tickets (futex.py: sleep/wake on a word,
                   or poll it where there are no futexes; tickets.py: the futex word's encoding)
    shm_files.py   where segments live: files in /dev/shm, or POSIX shm_open names (macOS)
    host_shm.py    a multi-host job's arena over one host's ranks (two-level collectives)
    sentinel.py    heartbeats: lost peers within seconds
    exchange.py    one op's sends/receives; mismatch, abort, lost-peer and timeout checks
    work.py        Work handles and the in-order op executor

Nothing here knows about collectives or algorithms; the process group builds on it.
"""
