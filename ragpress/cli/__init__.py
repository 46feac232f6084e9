"""The ``ragpress`` command line (extra ``cli``).

Subcommands are loaded lazily from :data:`COMMANDS`, so ``ragpress --help`` stays instant and a
subcommand's heavy imports happen only when it runs.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, str] = {
    "batch": "ragpress.cli.batch:batch",
    "compress": "ragpress.cli.compress:compress",
    "config": "ragpress.cli.config:config",
    "image": "ragpress.cli.image:image",
    "train-exit": "ragpress.cli.train_exit:train_exit",
    "train-soft": "ragpress.cli.train_soft:train_soft",
    "index": "ragpress.cli.index:index",
    "serve": "ragpress.cli.serve:serve",
    "distill": "ragpress.cli.distill:distill",
    "eval": "ragpress.cli.eval:eval_command",
}

try:
    import click
except ImportError:  # pragma: no cover - exercised only without the extra

    def main() -> None:
        """Explain how to get the CLI."""
        sys.stderr.write("The ragpress CLI needs its extra: pip install 'ragpress[cli]'\n")
        sys.exit(1)

else:

    class _LazyGroup(click.Group):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return sorted(COMMANDS)

        def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
            target = COMMANDS.get(cmd_name)
            if target is None:
                return None
            module, _, attribute = target.partition(":")
            command: Any = getattr(importlib.import_module(module), attribute)
            return command  # type: ignore[no-any-return]

    @click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="ragpress")
    def main() -> None:
        """Compress retrieved context before it reaches an LLM.

        \b
        Quick start (embedded defaults: all-MiniLM-L6-v2, in-process cache, no network):
          ragpress compress notes.txt -q "When was the contract signed?"
          ragpress batch corpus.jsonl.gz out.jsonl --target-ratio 4
        \b
        Settings come from flags, then RAGPRESS_* environment variables
        (see `ragpress config env`), then defaults.
        """
