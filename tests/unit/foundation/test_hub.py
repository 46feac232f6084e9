"""Model revisions of local folders: every byte of the weights counts (issue 21)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ragpress.hub import model_revision

SIZE = 5 << 20  # bigger than the first and last MiB that used to be all that was hashed


def checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * (SIZE // 256))
    return folder


def retrain_in_place(weights: Path, offset: int) -> None:
    """Change one byte (the size stays) and move the modification time on, as a write does."""
    stat = weights.stat()
    with weights.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize("offset", [SIZE // 2, (1 << 20) + 1, SIZE - (1 << 20) - 1])
def test_a_byte_changed_in_the_middle_changes_the_revision(tmp_path: Path, offset: int) -> None:
    folder = checkpoint(tmp_path)
    before = model_revision(str(folder))
    retrain_in_place(folder / "model.safetensors", offset)
    assert model_revision(str(folder)) != before


def test_each_file_is_read_once_per_process(tmp_path: Path, monkeypatch) -> None:
    folder = checkpoint(tmp_path)
    reads: list[str] = []
    real = hashlib.file_digest

    def counting(handle, digest):
        reads.append(handle.name)
        return real(handle, digest)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    first = model_revision(str(folder))
    assert model_revision(str(folder)) == first
    assert sorted(Path(r).name for r in reads) == ["config.json", "model.safetensors"]
    retrain_in_place(folder / "model.safetensors", 10)
    assert model_revision(str(folder)) != first
    assert len(reads) == 3  # only the changed file again


def test_a_single_file_and_code_files_count(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path)
    single = folder / "model.safetensors"
    before = model_revision(str(single))
    retrain_in_place(single, SIZE // 3)
    assert model_revision(str(single)) != before
    (folder / "modeling_custom.py").write_text("X = 1\n")
    code_before = model_revision(str(folder))
    (folder / "modeling_custom.py").write_text("X = 2\n")
    os.utime(folder / "modeling_custom.py", ns=(1, 10**18))
    assert model_revision(str(folder)) != code_before
