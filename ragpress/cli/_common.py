"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click
from pydantic import ValidationError

from ragpress.config import RagpressSettings
from ragpress.exceptions import ConfigurationError, MissingDependencyError, RagpressError
from ragpress.types import AUTO, CompressionOptions

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from rich.progress import Progress


__all__ = [
    "budget_options",
    "check_input_file",
    "check_output_file",
    "check_output_folder",
    "fail",
    "load_settings",
    "options_from",
    "parse_params",
    "pipeline_options",
    "progress_bar",
    "quiet_third_party",
    "require_text_method",
]

F = TypeVar("F", bound="Callable[..., Any]")
"""A click command function, before and after an options decorator (as click's own ``FC``)."""


_SETTINGS_FLAGS = ("env_file", "method", "cache", "max_document_chars", "model", "params")


def pipeline_options(func: F) -> F:
    """``--method``, ``--model``, ``--param``, ``--cache``, ``--max-document-chars``, and more.

    The command receives them as one ``settings`` argument (:func:`load_settings` applied), and
    ``verbose`` too if it has such a parameter.
    """
    command = func
    wants_verbose = "verbose" in inspect.signature(command).parameters

    @functools.wraps(command)
    def with_settings(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in _SETTINGS_FLAGS}
        verbose = kwargs.pop("verbose")
        kwargs["settings"] = load_settings(verbose=verbose, **flags)
        if wants_verbose:
            kwargs["verbose"] = verbose
        return command(*args, **kwargs)

    decorators: list[Callable[[Any], Any]] = [
        click.option(
            "--method",
            "-m",
            metavar="NAME",
            help="Compressor (default sentence_selection); chain with +, e.g. a+b.",
        ),
        click.option(
            "--model",
            metavar="PATH_OR_ID",
            help="Model of the compressor (hub id or local folder), e.g. for llmlingua2.",
        ),
        click.option(
            "--param",
            "params",
            multiple=True,
            metavar="KEY=VALUE",
            help="A compressor constructor argument (repeatable); VALUE is JSON or a string.",
        ),
        click.option(
            "--cache",
            metavar="memory|none|redis://HOST:PORT/DB",
            help="Where per-document analyses are cached (default: memory).",
        ),
        click.option(
            "--max-document-chars",
            type=click.IntRange(min=1),
            help="Reject longer documents (default 1,000,000).",
        ),
        click.option(
            "--env-file",
            type=click.Path(exists=True, dir_okay=False),
            help="Read RAGPRESS_* settings from this file.",
        ),
        click.option("--verbose", "-v", is_flag=True, help="Log what happens (to stderr)."),
    ]
    wrapped: Any = with_settings
    for decorator in reversed(decorators):
        wrapped = decorator(wrapped)
    return cast("F", wrapped)


def budget_options(func: F) -> F:
    """``--target-ratio`` | ``--rate`` | ``--target-tokens``, and ``--keep``."""
    decorators: list[Callable[[Any], Any]] = [
        click.option(
            "--target-ratio",
            "-r",
            type=RATIO,
            help="Original/compressed tokens, >= 1 (3 keeps about a third), or 'auto': as much "
            "as the evidence needs. Default 3.",
        ),
        click.option(
            "--min-ratio",
            type=float,
            help="With --target-ratio auto: the least compression (default 2).",
        ),
        click.option(
            "--max-ratio",
            type=float,
            help="With --target-ratio auto: the most compression (default 20).",
        ),
        click.option("--rate", type=float, help="Fraction of tokens to keep, in (0, 1]."),
        click.option("--target-tokens", type=int, help="Token budget per record."),
        click.option(
            "--keep",
            multiple=True,
            metavar="TEXT",
            help="A string that must survive compression (repeatable).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def load_settings(
    *,
    env_file: str | None,
    method: str | None,
    cache: str | None,
    max_document_chars: int | None,
    verbose: bool = False,
    model: str | None = None,
    params: tuple[str, ...] = (),
) -> RagpressSettings:
    """Settings from the environment (and ``--env-file``), overridden by the given flags.

    ``--model`` and ``--param`` go to the compressor's constructor; with a chain, to its last
    (finest) stage.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        base = RagpressSettings(_env_file=env_file)
        data = base.model_dump()
        if method:
            data["compression"]["method"] = method
            data["compression"]["stages"] = []
            data["compression"]["params"] = {}
        if cache:
            if cache in ("memory", "none"):
                data["cache"]["backend"] = cache
            elif cache.startswith(("redis://", "rediss://", "unix://")):
                data["cache"]["backend"] = "redis"
                data["cache"]["url"] = cache
            else:
                raise click.BadParameter(
                    f"{cache!r}: use memory, none, or a redis:// URL", param_hint="--cache"
                )
        if max_document_chars:
            data["compression"]["max_document_chars"] = max_document_chars
        extra = parse_params(params)
        if model:
            extra["model"] = model
        if extra:
            _apply_params(data["compression"], extra)
        return RagpressSettings.model_validate(data)
    except ValidationError as exc:
        raise click.UsageError(f"invalid settings: {exc}") from exc
    except ConfigurationError as exc:  # a RAGPRESS_* variable that is not the JSON it must be
        raise click.UsageError(str(exc)) from exc


def require_text_method(settings: RagpressSettings) -> None:
    """Stop before loading anything when the method's output is embeddings, not text.

    Raises:
        click.UsageError: The last stage emits soft embeddings (e.g. ``compllm``), which a text
            command cannot write.
    """
    from ragpress.compressors import compressor_class

    method = settings.compression.chain()[-1].method
    try:
        kind = compressor_class(method).output_kind
    except RagpressError:
        return  # an unknown or uninstalled method fails later with its own message
    if kind != "text":
        raise click.UsageError(
            f"method {method!r} produces soft embeddings (concept embeddings for a model that "
            "accepts inputs_embeds), not text, so this command has nothing to write; use it "
            "through the Python API (ragpress.middleware.generation.SoftPromptService) or the "
            "proxy with a local or vLLM model, or pick a text method such as sentence_selection"
        )


def parse_params(params: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` flags to a dict; VALUE is read as JSON when it parses, else as a string."""
    out: dict[str, Any] = {}
    for item in params:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{item!r}: write KEY=VALUE, e.g. device=cuda", param_hint="--param"
            )
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _apply_params(compression: dict[str, Any], extra: dict[str, Any]) -> None:
    stages = compression.get("stages") or []
    methods = [m.strip() for m in compression["method"].split("+") if m.strip()]
    if not stages and len(methods) == 1:
        compression["params"] = {**compression.get("params", {}), **extra}
        return
    if not stages:
        stages = [{"method": m} for m in methods]
    last = dict(stages[-1])
    last["params"] = {**(last.get("params") or {}), **extra}
    compression["stages"] = [*stages[:-1], last]


class _Ratio(click.ParamType):  # type: ignore[type-arg]  # subscripting fails on older click
    """A compression ratio: a number, or ``auto``."""

    name = "ratio"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float | str:
        if isinstance(value, float) or value == AUTO:
            return value  # type: ignore[no-any-return]
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number such as 3 nor 'auto'", param, ctx)


RATIO = _Ratio()
"""Click type of ``--target-ratio``."""


def options_from(
    target_ratio: float | str | None,
    rate: float | None,
    target_tokens: int | None,
    keep: tuple[str, ...],
    *,
    min_ratio: float | None = None,
    max_ratio: float | None = None,
) -> CompressionOptions:
    """The per-run budget from the budget flags (unset: the configured default)."""
    try:
        return CompressionOptions(
            target_ratio=target_ratio,  # type: ignore[arg-type]  # RATIO gives a float or "auto"
            rate=rate,
            target_tokens=target_tokens,
            keep=keep,
            min_ratio=min_ratio,
            max_ratio=max_ratio,
        )
    except RagpressError as exc:
        hint = "--" + (getattr(exc, "param", None) or "target-ratio").replace("_", "-")
        raise click.BadParameter(str(exc), param_hint=hint.split("[")[0]) from exc


def fail(exc: RagpressError) -> NoReturn:
    """Turn a start-up error into a clean CLI exit (code 2) without a traceback."""
    if isinstance(exc, ConfigurationError | MissingDependencyError):
        raise click.UsageError(str(exc)) from exc
    raise click.ClickException(str(exc)) from exc


def quiet_third_party() -> None:
    """Silence model-loading progress bars that would garble our own output."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def dumps(record: dict[str, Any]) -> str:
    """One JSONL line: compact, UTF-8 kept as is."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def progress_bar(label: str, *, disable: bool, fields: Sequence[str] = ()) -> Progress:
    """A rich progress bar: label, bar, done/total, elapsed, eta.

    Args:
        label: Bold text in front, e.g. ``"compressing"``.
        disable: Draw nothing (``--quiet``, or stderr is not a terminal).
        fields: Task fields shown after the count as ``name value`` (``progress.update(task,
            name=...)`` sets them).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(f"{name} {{task.fields[{name}]}}") for name in fields),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=disable,
    )


def check_input_file(path: str, *, param_hint: str) -> None:
    """Stop with a usage error (exit 2) unless ``path`` is a readable file (``-`` is stdin).

    Raises:
        click.BadParameter: It does not exist, is a folder, or cannot be read.
    """
    if path == "-":
        return
    file = Path(path)
    if not file.exists():
        raise click.BadParameter(f"{path!r} does not exist; check the path", param_hint=param_hint)
    if file.is_dir():
        raise click.BadParameter(
            f"{path!r} is a folder, not a file; name the file inside it", param_hint=param_hint
        )
    if not os.access(file, os.R_OK):
        raise click.BadParameter(
            f"{path!r} cannot be read (permission denied); fix its permissions or copy it",
            param_hint=param_hint,
        )


def check_output_file(path: str, *, param_hint: str) -> None:
    """Stop with a usage error (exit 2) unless a file can be written at ``path``.

    The folder must exist and be writable, and ``path`` must not be a folder (``-`` is stdout).

    Raises:
        click.BadParameter: Saying which of these fails and what to do.
    """
    if path == "-":
        return
    file = Path(path)
    if file.is_dir():
        raise click.BadParameter(
            f"{path!r} is a folder; {param_hint} names the output file, e.g. "
            f"{str(file / 'out.jsonl')!r}",
            param_hint=param_hint,
        )
    folder = file.absolute().parent
    if not folder.exists():
        raise click.BadParameter(
            f"the folder {str(folder)!r} of {path!r} does not exist; create it first "
            f"(mkdir -p {folder}) or write somewhere else",
            param_hint=param_hint,
        )
    _check_writable_folder(folder, path, param_hint)
    if file.exists() and not os.access(file, os.W_OK):
        raise click.BadParameter(
            f"{path!r} exists and is not writable (permission denied); fix its permissions or "
            "write somewhere else",
            param_hint=param_hint,
        )


def check_output_folder(path: str, *, param_hint: str) -> None:
    """Stop with a usage error (exit 2) unless a folder can be created or written at ``path``.

    Missing folders are fine (they are created); a file in the way, or a folder that cannot be
    written, is not.

    Raises:
        click.BadParameter: Saying what is in the way and what to do.
    """
    folder = Path(path).absolute()
    if folder.exists() and not folder.is_dir():
        raise click.BadParameter(
            f"{path!r} is a file; {param_hint} must be a folder (new or existing)",
            param_hint=param_hint,
        )
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    _check_writable_folder(existing, path, param_hint)


def _check_writable_folder(folder: Path, path: str, param_hint: str) -> None:
    if not folder.is_dir():
        raise click.BadParameter(
            f"{str(folder)!r} is a file, not a folder, so {path!r} cannot be created there; "
            "write somewhere else",
            param_hint=param_hint,
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(
            f"the folder {str(folder)!r} is not writable (permission denied), so {path!r} cannot "
            "be written; fix its permissions or write somewhere else",
            param_hint=param_hint,
        )
