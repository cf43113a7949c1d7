"""ringrun: the ringrt launcher (spawn, watch, stop, restart, span hosts).

Layout, in the order a job flows through it::

    cli.py          click options -> config.build_config -> run; the ``ringrun`` entry point
    config.py       the frozen LaunchConfig, and every check that can fail before a spawn
    rendezvous.py   node 0 hosts the store (ringrt.store._server) for the whole job
    env.py          each worker's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...)
    supervisor.py   spawn through _child.py, watch, stop (SIGTERM, grace, SIGKILL), restart
    elastic.py      --nnodes MIN:MAX: this node's agent (rounds around the supervisor)
    rounds.py       membership rounds: pure transitions, compare-and-set in the store
    keepalive.py    each agent's keepalive counter in the store, and the watch that finds a
                    silent node of the generation (its workers may still be starting up)
    _child.py       the trampoline: PDEATHSIG, parent check, CPU pinning, exec
    output.py       "[RANK] " line prefixing, in-place \r progress updates, per-rank log
                    files, stderr tails
    report.py       failure summary, restart and signal notices, exit statuses
    flight.py       the workers' flight-recorder dumps, the table and the hang diagnosis
    trace.py        --trace: merge the ranks' timeline files
                    (also ``python -m ringrt_launcher.trace``)
    errors.py       LaunchError (carries its exit code)

``ringrt`` never imports ``ringrt_launcher``; the launcher uses ``ringrt`` only for the store server
(and its CurveZMQ keys with ``--encrypt``), ``Deadline``, and ``ringrt._observe`` (dump file
names, timeline merge), imported once options are valid.
"""
