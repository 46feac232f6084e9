"""``ragpress compress``: compress one text or one JSON record."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ragpress.cli._common import (
    budget_options,
    check_input_file,
    fail,
    options_from,
    pipeline_options,
    quiet_third_party,
    require_text_method,
)
from ragpress.exceptions import RagpressError, RequestValidationError
from ragpress.middleware.batch.records import output_record, parse_record
from ragpress.middleware.pipeline.factory import build_pipeline

if TYPE_CHECKING:
    from ragpress.config import RagpressSettings


@click.command()
@click.argument("source", metavar="[FILE]", default="-")
@click.option("--query", "-q", help="The question the context should answer.")
@pipeline_options
@budget_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the full result (docs, spans, stats) as JSON instead of the text.",
)
def compress(
    source: str,
    query: str | None,
    settings: RagpressSettings,
    target_ratio: float | str | None,
    min_ratio: float | None,
    max_ratio: float | None,
    rate: float | None,
    target_tokens: int | None,
    keep: tuple[str, ...],
    as_json: bool,
) -> None:
    """Compress FILE (or stdin) and print the result.

    \b
    FILE may be plain text (one document), or JSON: a record like
    {"question": "...", "docs": [{"title": "...", "text": "..."}]}, or a list of documents.
    --query overrides the record's question.

    \b
    Examples:
      ragpress compress report.md -q "What was the Q3 revenue?" -r 4
      cat docs.json | ragpress compress --json --target-tokens 300
    """
    check_input_file(source, param_hint="FILE")
    raw = sys.stdin.read() if source == "-" else _read(source)
    record = _as_record(raw, query)
    options = options_from(
        target_ratio, rate, target_tokens, keep, min_ratio=min_ratio, max_ratio=max_ratio
    )
    require_text_method(settings)
    quiet_third_party()
    try:
        item = parse_record(1, json.dumps(record))
        pipeline = build_pipeline(settings)
        try:
            result = pipeline.compress(item.query, item.passages, options)
        finally:
            pipeline.close()
    except RequestValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    except RagpressError as exc:
        fail(exc)
    if as_json:
        out = output_record(item, result, sum(result.timings_ms.values()))
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    click.echo(result.context())
    click.echo(
        f"{result.method}: {result.tokens_before} -> {result.tokens_after} tokens "
        f"({result.ratio:.2f}x)",
        err=True,
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise click.BadParameter(f"{path!r} does not exist", param_hint="FILE") from None
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"{path!r} is not UTF-8 text (byte {exc.start}); re-encode it as UTF-8",
            param_hint="FILE",
        ) from None


def _as_record(raw: str, query: str | None) -> dict[str, Any]:
    stripped = raw.strip()
    record: dict[str, Any]
    parsed: Any = None
    if stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError:
            parsed = None
    if isinstance(parsed, dict):
        record = parsed
    elif isinstance(parsed, list):
        record = {"docs": [d if isinstance(d, dict) else {"text": d} for d in parsed]}
    else:
        record = {"text": raw}
    if query is not None:
        record["question"] = query
    return record
