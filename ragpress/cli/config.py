"""``ragpress config``: show the resolved settings and every environment variable."""

from __future__ import annotations

import json
from typing import Any

import click

from ragpress.config import RagpressSettings, settings_table
from ragpress.exceptions import ConfigurationError
from ragpress.redaction import mask_url


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
    """Print the settings in effect (environment and defaults), secrets masked.

    Keys are ``SecretStr`` and print as stars; passwords and secret parameters inside URLs
    (``redis://:PASSWORD@host``, ``?api_key=``) are masked too.
    """
    try:
        settings = RagpressSettings(_env_file=env_file)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(json.dumps(_masked(settings.model_dump(mode="json")), indent=2))


def _masked(value: Any) -> Any:
    """``value`` with every URL-looking string masked (:func:`ragpress.redaction.mask_url`)."""
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


@config.command()
def env() -> None:
    """Print every RAGPRESS_* environment variable as a Markdown table."""
    click.echo(settings_table())
