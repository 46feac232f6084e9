"""``ragpress config``: show the resolved settings and every environment variable."""

from __future__ import annotations

import json

import click

from ragpress.config import RagpressSettings, settings_table


@click.group()
def config() -> None:
    """Inspect settings."""


@config.command()
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read RAGPRESS_* settings from this file too.",
)
def show(env_file: str | None) -> None:
    """Print the settings in effect (environment and defaults), secrets masked."""
    settings = RagpressSettings(_env_file=env_file)
    click.echo(json.dumps(settings.model_dump(mode="json"), indent=2))


@config.command()
def env() -> None:
    """Print every RAGPRESS_* environment variable as a Markdown table."""
    click.echo(settings_table())
