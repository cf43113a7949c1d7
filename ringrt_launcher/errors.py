"""Launcher errors: each carries the exit code ``ringrun`` ends with.

::

    click.ClickException              exit 1, "Error: ..." on stderr
     ├── click.UsageError             exit 2: bad options, missing script, port in use, ...
     └── LaunchError                  exit 1: a job that could not start
"""

from __future__ import annotations

import click

EXIT_LAUNCH_FAILED = 1


class LaunchError(click.ClickException):
    """The job could not be started or supervised (not a usage mistake).

    Attributes:
        exit_code: the status ``ringrun`` exits with (click reads this attribute).
    """

    exit_code = EXIT_LAUNCH_FAILED
