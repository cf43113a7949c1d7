"""Seeing inside a job: the flight recorder, the timeline, algorithm decisions.

Layer 0 (foundations): imports nothing of ringrt but ``errors`` and ``_env``, so the transport,
the process group, the collectives and DDP can all report to it.

    site.py       site_of() / call_site(): the user's source line of an op (first frame
                  outside ringrt)
    recorder.py   FlightRecorder: the last N ops of this rank (always on, RINGRT_FLIGHT_RECORDER)
    waits.py      peer_wait: seconds this process spent waiting for peers (timeline's split)
    timeline.py   Tracer: every op, DDP bucket and optimizer step as a Chrome-trace span
                  (RINGRT_TRACE), written per rank as msgpack entries
    clock.py      estimating a rank's clock offset to rank 0 (ranks on other hosts)
    merge.py      per-rank timeline files -> one Chrome trace / Perfetto JSON
    dump.py       the flight recorder's dump on an error or SIGUSR1 (stderr + RINGRT_FLIGHT_DIR)
    observer.py   Observer: what the process group calls per op; ties the above together

(``RINGRT_DEBUG=1``'s algorithm decisions live with the choice: ``_algorithms/decisions.py``.)
"""
