"""Property-based fuzzing of the batch record reader and writer (issue 21).

Whatever a line holds (any JSON value, any Unicode including lone surrogates, huge numbers,
deep nesting, bytes that are not JSON or not UTF-8), a batch run:

* raises nothing, for that line or the others;
* writes exactly one output line per input line, in order;
* writes strict JSON (no NaN or Infinity; UTF-8 encodable);
* passes every field other than ragpress's own through unchanged.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragpress.config import RagpressSettings
from ragpress.middleware.batch.jsonl import JsonlWriter, jsonl_completed_keys
from ragpress.middleware.batch.records import record_key
from ragpress.middleware.batch.runner import ResumeSet, run_batch
from ragpress.middleware.pipeline.core import Pipeline
from ragpress.middleware.pipeline.factory import build_pipeline
from tests.support.fakes import EchoPipeline, HashingEmbedder

OWN = {"docs", "text", "context", "stats", "error", "line", "ragpress_line"}
"""Fields ragpress writes; every other field must come out as it went in."""

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Any Unicode, lone surrogates included (JSON writes them as \udXXX escapes).
any_text = st.text(alphabet=st.characters(codec=None), max_size=40)
big_ints = st.integers(min_value=-(10**4000), max_value=10**4000) | st.integers()
json_scalars = (
    st.none()
    | st.booleans()
    | big_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
sentences = st.lists(
    st.sampled_from(["Paris is in France.", "It is big.", "Bread needs flour.", "Ok"]) | any_text,
    min_size=0,
    max_size=4,
).map(" ".join)
documents = st.fixed_dictionaries(
    {"text": sentences}, optional={"title": any_text | st.none(), "meta": json_values}
)
records = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "question": any_text | json_values,
        "docs": st.lists(documents, min_size=0, max_size=3) | json_values,
        "text": sentences | json_values,
        "line": json_values,
        "answers": json_values,
    },
).flatmap(
    lambda base: st.dictionaries(
        any_text.filter(lambda k: k not in OWN and k not in base), json_values, max_size=3
    ).map(lambda extra: {**base, **extra})
)


def deep(depth: int) -> bytes:
    return b'{"text": "a b", "x": ' + b"[" * depth + b"]" * depth + b"}"


odd_lines = st.one_of(
    st.binary(min_size=1, max_size=40).filter(lambda b: b.strip() and b"\n" not in b),
    st.integers(min_value=90, max_value=3000).map(deep),
    st.integers(min_value=4301, max_value=6000).map(lambda n: b'{"n": ' + b"9" * n + b"}"),
    st.sampled_from(
        [
            b'{"text": "a", "x": NaN}',
            b'{"text": "a", "x": -Infinity}',
            b'{"text": "a", "x": 1e400}',
            b'{"text": "\\ud800 a"}',
            b'{"id": "\\udc00", "text": "a"}',
            b'{"line": "x", "text": "a"}',
            b"[]",
            b'"just a string"',
            b"null",
        ]
    ),
)
lines = st.lists(records.map(lambda r: json.dumps(r).encode()) | odd_lines, min_size=1, max_size=8)


def strict_loads(line: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in the output is not JSON")

    return json.loads(line, parse_constant=refuse)


def run(raw_lines: list[bytes], pipeline: Any, *, batch_size: int) -> tuple[list[Any], Path]:
    """Run the batch into a JSONL file; return the records read back and the file."""
    folder = Path(tempfile.mkdtemp())
    target = folder / "out.jsonl"
    writer = JsonlWriter(str(target))
    numbered = list(enumerate(raw_lines, 1))
    report = anyio.run(
        lambda: run_batch(numbered, cast("Pipeline", pipeline), writer.write, batch_size=batch_size)
    )
    writer.close()
    text = target.read_bytes().decode("utf-8")  # strictly UTF-8
    out = [strict_loads(line) for line in text.split("\n")[:-1]]
    assert len(out) == len(raw_lines) == report.records
    return out, target


def input_record(raw: bytes) -> dict[str, Any] | None:
    """The line as a record, when it is one ragpress reads (else ``None``)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def check_passthrough(raw_lines: list[bytes], out: list[Any]) -> None:
    for raw, record in zip(raw_lines, out, strict=True):
        assert isinstance(record, dict) and "error" in record
        given = input_record(raw)
        if given is None or record.get("raw") is not None:
            assert record["error"], record  # unreadable lines say why
            continue
        for key, value in given.items():
            if key not in OWN:
                assert key in record and record[key] == value, key
        if "line" in given:
            assert record["line"] == given["line"]


@FUZZ
@given(lines, st.integers(min_value=1, max_value=4))
def test_any_line_gives_one_strict_json_line_with_its_fields(raw_lines, batch_size) -> None:
    out, target = run(raw_lines, EchoPipeline(), batch_size=batch_size)
    check_passthrough(raw_lines, out)
    # --resume reads the output back: every line is done, nothing is cut.
    keys = jsonl_completed_keys(str(target))
    assert sum(keys.values()) == len(raw_lines)
    expected = {record_key(None, i) for i in range(1, len(raw_lines) + 1)}
    done = ResumeSet(keys)
    numbered = list(enumerate(raw_lines, 1))
    rerun: list[dict[str, Any]] = []
    anyio.run(
        lambda: run_batch(numbered, cast("Pipeline", EchoPipeline()), rerun.append, skip=done)
    )
    assert rerun == [], (expected, keys)


@dataclass(frozen=True)
class _Real:
    """The real pipeline (sentence selection, hashing embedder, no cache): no model to load."""

    def __call__(self) -> Pipeline:
        settings = RagpressSettings(_env_file=None, cache={"backend": "none"})
        return build_pipeline(settings, embedder=HashingEmbedder())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(lines)
def test_the_real_pipeline_survives_any_line(raw_lines) -> None:
    pipeline = _Real()()
    out, _ = run(raw_lines, pipeline, batch_size=3)
    check_passthrough(raw_lines, out)
    for record in out:
        assert not str(record["error"] or "").startswith("internal error"), record["error"]
