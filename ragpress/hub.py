"""Find models on disk and name their revision, without touching the network.

Models are referenced by Hugging Face hub id or by local folder. Loading itself is left to the
library that owns the model (transformers, sentence-transformers); this module only answers
"which exact weights are these?" for cache fingerprints, and phrases the error users see when
a model cannot be had offline.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

from ragpress.exceptions import ConfigurationError, ModelNotFoundError

__all__ = ["file_digest", "model_not_found", "model_revision", "unsafe_checkpoint"]

_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})(?:/|$)")
_WEIGHT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".onnx",
    ".gguf",
    ".h5",
    ".msgpack",
    ".npz",
    ".npy",
    ".model",
    ".json",
    ".txt",
    ".py",  # remote code changes behaviour as much as weights do
)
# Whole-file digests by (resolved path, size, mtime_ns): each weight file is read once per
# process, however often a compressor is built on it.
_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def model_revision(name_or_path: str) -> str:
    """A stable identifier of the weights behind ``name_or_path``.

    * a hub snapshot (a cached id, or a path inside ``.../snapshots/<commit>/``): the commit;
    * a local folder: a hash of its file names, sizes and the full content of each weight,
      code or config file (read once per process and remembered by path, size and
      modification time, so a model retrained in place gets a new revision);
    * an id that is not in the local cache: ``"unresolved"``.
    """
    path = Path(name_or_path).expanduser()
    if not path.exists():
        cached = _cached_snapshot(name_or_path)
        if cached is None:
            return "unresolved"
        path = cached
    match = _SNAPSHOT.search(path.resolve().as_posix())
    if match:
        return match.group(1)
    return _hash_folder(path)


def model_not_found(
    name_or_path: str, reason: object, *, what: str = "model"
) -> ModelNotFoundError:
    """The error for a model that cannot be loaded, with the ways to fix it."""
    return ModelNotFoundError(
        f"{what} {name_or_path!r} could not be loaded ({reason}). Pass a local folder that "
        f"holds it, or download it once on a machine with network access "
        f"(`hf download {name_or_path} --local-dir ./models/<name>`) and point at that folder; "
        "with the model in the Hugging Face cache, HF_HUB_OFFLINE=1 keeps loads offline"
    )


def unsafe_checkpoint(
    name_or_path: str, reason: object, *, what: str = "model"
) -> ConfigurationError:
    """The error for a pickle checkpoint that holds more than tensors (issue 21).

    Models load with ``torch.load(weights_only=True)``, which refuses to run the code a pickle
    can carry; this turns torch's refusal (whose advice is to switch that off) into ours.
    """
    lines = [line.strip() for line in str(reason).splitlines() if "GLOBAL" in line.upper()]
    detail = f" ({lines[0]})" if lines else ""
    return ConfigurationError(
        f"{what} {name_or_path!r} has a pickle weights file (pytorch_model.bin or similar) that "
        f"holds more than tensors{detail}; ragpress loads only tensors from pickles and never "
        "runs code from a checkpoint. Use a checkpoint in safetensors format "
        "(model.safetensors), or convert this one where you trust its origin"
    )


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def _hash_folder(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:{size}".encode())
        if file.suffix in _WEIGHT_SUFFIXES:
            digest.update(f":{file_digest(file)}\n".encode())
    return "sha256:" + digest.hexdigest()[:16]


def file_digest(file: Path) -> str:
    """SHA-256 of the whole file, streamed; remembered per (path, size, mtime_ns).

    Issue 21: hashing only the first and last MiB missed a model retrained in place. A file
    rewritten with the same size within the file system's timestamp granularity (a few
    milliseconds on some) keeps its remembered digest until the process restarts.
    """
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
    if known is not None:
        return known
    with file.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    with _DIGESTS_LOCK:
        _DIGESTS[key] = digest
    return digest
