"""Collectives across netlab hosts, and the cost model fitted to them (needs root for netlab).

::

    collectives.py     brings up a lab, measures its links, runs the sweep on every host
    _sweep.py          the rank side: each op under a forced algorithm over a size sweep
    cost_model.py      fits ringrt's alpha-beta-gamma model to the sweeps, then extrapolates
    fit_two_level.py   fits the two-level model's local costs and checks the picks
"""
