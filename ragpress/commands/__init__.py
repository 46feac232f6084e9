"""Implementations of the ``ragpress`` subcommands (one module each)."""
