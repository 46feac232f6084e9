"""``ragpress image``: make an image or a PDF cheaper for one API model, and say by how much."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ragpress.cli._common import fail
from ragpress.exceptions import RagpressError, RequestValidationError

if TYPE_CHECKING:
    from ragpress.compressors.visual.api.parts import ImagePartResult


@click.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "-m", required=True, help="Target API model, e.g. gpt-4o.")
@click.option("--budget", type=click.IntRange(min=0), help="Most tokens per image or page.")
@click.option("--ocr", is_flag=True, help="Send text instead when the OCR text is cheaper.")
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write what would be sent (images and .txt parts).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def image(
    source: Path, model: str, budget: int | None, ocr: bool, out: Path | None, as_json: bool
) -> None:
    """Compress the image or PDF SOURCE for MODEL and report tokens before and after.

    \b
    Images: margins cropped, blank bands collapsed, resized to the cheapest legible size,
    detail chosen. PDFs: each page becomes its text layer, or its compressed image.
    \b
    Examples:
      ragpress image scan.png --model gpt-4o
      ragpress image report.pdf --model claude-sonnet-4-5 --ocr -o parts/
    """
    try:
        from ragpress.compressors.visual.api.costs import cost_model_for

        cost_model_for(model)
    except RequestValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    try:
        from ragpress.compressors.visual.api.documents import compress_pdf
        from ragpress.compressors.visual.api.parts import ImagePartCompressor

        engine = None
        if ocr:
            from ragpress.compressors.visual.api.ocr import RapidOcrEngine

            engine = RapidOcrEngine()
        parts = ImagePartCompressor(model, ocr_engine=engine)
        data = source.read_bytes()
        if data.startswith(b"%PDF"):
            result, _ = compress_pdf(
                data, parts, shape="openai_chat", budget_tokens_per_page=budget, param=str(source)
            )
        else:
            result = parts.compress_bytes(
                data, shape="openai_chat", budget_tokens=budget, param=str(source)
            )
    except RagpressError as exc:
        fail(exc)
    if out is not None:
        _write_parts(result, out, source.stem)
    summary = {
        "source": str(source),
        "model": model,
        "route": result.route,
        "reason": result.reason,
        "tokens_before": result.tokens_before,
        "tokens_after": result.tokens_after,
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"{source.name}: {result.tokens_before} -> {result.tokens_after} tokens for {model} "
            f"({result.route}: {result.reason})"
        )


def _write_parts(result: ImagePartResult, folder: Path, stem: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number, part in enumerate(result.parts, start=1):
        name = f"{stem}-{number}"
        if part.get("type") == "text":
            (folder / f"{name}.txt").write_text(part["text"] + "\n")
            continue
        url: Any = part.get("image_url", {}).get("url", "")
        header, _, payload = str(url).partition(",")
        suffix = ".jpg" if "jpeg" in header else ".png"
        (folder / f"{name}{suffix}").write_bytes(base64.b64decode(payload))
