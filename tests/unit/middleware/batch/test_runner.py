from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

import anyio
import pytest

from ragpress.exceptions import RequestValidationError
from ragpress.middleware.batch.records import parse_record, record_key
from ragpress.middleware.batch.runner import run_batch
from ragpress.types import CompressedPassage, CompressionResult

if TYPE_CHECKING:
    from ragpress.middleware.pipeline.core import Pipeline


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "line 7: not valid JSON"),
        (b"\xff\xfe{}", "line 7: not valid UTF-8"),
        (b"[1, 2]", "line 7: expected a JSON object"),
        (b'{"id": 1}', 'neither "docs" nor "text"'),
        (b'{"docs": []}', "docs must be a non-empty list"),
        (b'{"docs": ["plain"]}', "docs[0] is a string"),
        (b'{"docs": [{"title": "t"}]}', "docs[0].text is missing"),
        (b'{"docs": [{"text": 5}]}', "docs[0].text is not a string"),
        (b'{"docs": [{"text": " "}, {"text": ""}]}', "every document is empty"),
        (b'{"question": 3, "text": "x"}', "question must be a string"),
    ],
)
def test_bad_records_say_where_and_what(raw: bytes, message: str) -> None:
    with pytest.raises(
        RequestValidationError, match=message.replace("[", r"\[").replace("]", r"\]")
    ):
        parse_record(7, raw)


def test_documents_keep_title_id_and_metadata() -> None:
    item = parse_record(
        1,
        json.dumps(
            {
                "id": "r",
                "query": "q",
                "docs": [{"text": "t", "title": "T", "id": 3, "is_gold": True}],
            }
        ),
    )
    assert item.query == "q"
    passage = item.passages[0]
    assert (passage.title, passage.id, dict(passage.metadata)) == ("T", "3", {"is_gold": True})


class FakePipeline:
    """Echoes documents back; sleeps longer for earlier records to scramble completion order.

    :meth:`as_pipeline` hands it to ``run_batch``, which only calls ``acompress_many``.
    """

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0

    async def acompress_many(self, requests):
        out = []
        for request in requests:
            try:
                out.append(await self._echo(request.passages))
            except RuntimeError as exc:
                out.append(exc)
        return out

    async def _echo(self, passages):
        self.active += 1
        self.peak = max(self.peak, self.active)
        await anyio.sleep(0.001 * (len(passages[0].text) % 7))
        self.active -= 1
        if passages[0].text == "boom":
            raise RuntimeError("exploded")
        n = len(passages[0].text.split())
        return CompressionResult(
            passages=tuple(
                CompressedPassage(p, p.text, ((0, len(p.text)),), n, n) for p in passages
            ),
            method="echo",
            tokens_before=n,
            tokens_after=n,
        )

    def as_pipeline(self) -> Pipeline:
        return cast("Pipeline", self)


async def test_outputs_come_in_input_order_one_per_line() -> None:
    lines = [
        json.dumps({"id": i, "text": "w " * (i % 11 + 1), "extra": i}).encode() for i in range(200)
    ]
    lines[50] = b"garbage"
    lines[60] = json.dumps({"id": 60, "text": "boom"}).encode()
    out: list[dict[str, Any]] = []
    pipeline = FakePipeline()
    report = await run_batch(enumerate(lines, 1), pipeline.as_pipeline(), out.append, workers=8)
    assert len(out) == 200
    assert [r["id"] for r in out[:50]] == list(range(50))
    assert out[50]["error"].startswith("line 51: not valid JSON") and out[50]["raw"] == "garbage"
    assert out[60]["error"] == "internal error: RuntimeError: exploded"
    assert out[60]["text"] == "boom"  # a failed record keeps everything it had
    assert out[7]["extra"] == 7 and out[7]["error"] is None
    assert report.records == 200 and report.errors == 2
    assert pipeline.peak <= 8


async def test_memory_stays_bounded_on_long_inputs() -> None:
    read = written = 0
    peak_backlog = 0

    def lines():
        nonlocal read
        for i in range(5000):
            read += 1
            yield i + 1, json.dumps({"id": i, "text": "x y"}).encode()

    def write(record: dict[str, Any]) -> None:
        nonlocal written, peak_backlog
        written += 1
        peak_backlog = max(peak_backlog, read - written)

    await run_batch(lines(), FakePipeline().as_pipeline(), write, workers=4)
    assert written == 5000
    assert peak_backlog <= 2 * 4 + 64 + 2  # in flight + one read-ahead chunk


async def test_skip_supports_resume() -> None:
    lines = [json.dumps({"id": i, "text": "a b"}).encode() for i in range(10)]
    out: list[dict[str, Any]] = []
    done = {record_key({"id": i}, 0) for i in range(6)}
    report = await run_batch(
        enumerate(lines, 1),
        FakePipeline().as_pipeline(),
        out.append,
        skip=done.__contains__,
    )
    assert [r["id"] for r in out] == [6, 7, 8, 9]
    assert report.skipped == 6
