from __future__ import annotations

import pytest
from langchain_core.documents import Document

from ragpress.exceptions import RetrievalError
from ragpress.middleware.langchain import RagpressRetriever
from ragpress.retrieval.faiss import FaissRetriever
from ragpress.types import Passage

PASSAGES = [
    Passage(
        "Refunds take five to seven business days.",
        title="Refunds",
        id="r#0",
        metadata={"source": "refunds.md", "section": "Timing"},
    ),
    Passage(
        "Parcels leave the warehouse the same day.",
        title="Shipping",
        id="s#0",
        metadata={"title": "custom title wins"},
    ),
    Passage("Gift cards are valid for two years.", id="g#0"),
]


@pytest.fixture
def index(fake_embedder) -> FaissRetriever:
    return FaissRetriever.build(PASSAGES, fake_embedder)


def test_documents_carry_id_metadata_title_and_score(index) -> None:
    docs = RagpressRetriever(retriever=index, k=2).invoke("how many days do refunds take")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    first = docs[0]
    assert first.id == "r#0" and first.page_content == PASSAGES[0].text
    assert first.metadata["source"] == "refunds.md" and first.metadata["section"] == "Timing"
    assert first.metadata["title"] == "Refunds"
    assert 0 < first.metadata["ragpress"]["retrieval_score"] <= 1.0001
    assert (
        docs[0].metadata["ragpress"]["retrieval_score"]
        >= docs[1].metadata["ragpress"]["retrieval_score"]
    )


def test_existing_title_metadata_is_not_overwritten(index) -> None:
    docs = RagpressRetriever(retriever=index, k=3).invoke("warehouse parcels")
    shipping = next(d for d in docs if d.id == "s#0")
    assert shipping.metadata["title"] == "custom title wins"


async def test_async_matches_sync(index) -> None:
    retriever = RagpressRetriever(retriever=index, k=3)
    sync = retriever.invoke("gift card validity")
    assert await retriever.ainvoke("gift card validity") == sync


def test_from_index_checks_the_embedder(index, fake_embedder, tmp_path) -> None:
    index.save(tmp_path)
    retriever = RagpressRetriever.from_index(tmp_path, fake_embedder, k=1, tags=["kb"])
    assert retriever.invoke("refunds")[0].id == "r#0" and retriever.tags == ["kb"]
    fake_embedder.fingerprint = "something-else"
    with pytest.raises(RetrievalError, match="something-else"):
        RagpressRetriever.from_index(tmp_path, fake_embedder)


def test_k_must_be_positive(index) -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        RagpressRetriever(retriever=index, k=0)
