"""The ``ragpress`` command group, typed for the CLI tests (import as ``from tests.support.cli``).

With click installed, :data:`ragpress.cli.main` is a :class:`click.Group`; mypy types it from the
stand-in function that ``ragpress.cli`` defines for installs without the ``cli`` extra.
"""

from __future__ import annotations

import click

from ragpress.cli import main as _main

__all__ = ["main"]

assert isinstance(_main, click.Group)
main: click.Group = _main
