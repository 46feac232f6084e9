"""`python -m ragpress`: the command line."""

from __future__ import annotations

from ragpress.cli import main

main()
