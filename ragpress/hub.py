"""Find models on disk and name their revision, without touching the network.

Models are referenced by Hugging Face hub id or by local folder. Loading itself is left to the
library that owns the model (transformers, sentence-transformers); this module only answers
"which exact weights are these?" for cache fingerprints, and phrases the error users see when
a model cannot be had offline.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ragpress.exceptions import ModelNotFoundError

__all__ = ["model_not_found", "model_revision"]

_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})(?:/|$)")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".model", ".json", ".txt")


def model_revision(name_or_path: str) -> str:
    """A stable identifier of the weights behind ``name_or_path``.

    * a hub snapshot (a cached id, or a path inside ``.../snapshots/<commit>/``): the commit;
    * a local folder: a hash of its file names, sizes and the first and last MiB of each
      weight or config file (cheap on multi-GB checkpoints, sensitive to re-training);
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
            with file.open("rb") as handle:
                digest.update(handle.read(1 << 20))
                if size > 2 << 20:
                    handle.seek(-(1 << 20), 2)
                    digest.update(handle.read())
    return "sha256:" + digest.hexdigest()[:16]
