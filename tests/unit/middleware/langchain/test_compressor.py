"""The LangChain compressor with real LangChain objects (langchain-core and langchain-classic)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_text_splitters import CharacterTextSplitter

from ragpress.exceptions import BudgetError, RequestValidationError
from ragpress.middleware.langchain import RagpressDocumentCompressor, RagpressRetriever
from ragpress.middleware.pipeline.core import Pipeline
from ragpress.provenance import join_spans
from ragpress.retrieval.faiss import FaissRetriever
from ragpress.types import Passage

TEXTS = {
    "curie": (
        "Marie Curie won two Nobel Prizes. She was born in Warsaw. She studied in Paris. "
        "Her husband was Pierre Curie."
    ),
    "physics": (
        "The Nobel Prize in Physics was first awarded in 1901. Wilhelm Röntgen received it for "
        "discovering X-rays. The prize is announced in October."
    ),
    "bread": "Bread is made from flour. Yeast makes it rise. Ovens bake it.",
}
QUESTION = "Who received the first Nobel Prize in Physics?"


class Recorder(BaseCallbackHandler):
    """Records every run a LangChain callback manager reports."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[Any] = []
        self.errors: list[BaseException] = []
        self.prompts: list[str] = []

    def on_chain_start(self, serialized, inputs, **kwargs) -> None:
        self.started.append(kwargs.get("name") or "")

    def on_chain_end(self, outputs, **kwargs) -> None:
        self.ended.append(outputs)

    def on_chain_error(self, error, **kwargs) -> None:
        self.errors.append(error)

    def on_retriever_start(self, serialized, query, **kwargs) -> None:
        self.started.append(f"retriever:{kwargs.get('name')}")

    def on_chat_model_start(self, serialized, messages, **kwargs) -> None:
        self.prompts.append(messages[0][-1].content)


class AsyncRecorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.started: list[str] = []

    async def on_chain_start(self, serialized, inputs, **kwargs) -> None:
        self.started.append(kwargs.get("name") or "")


@pytest.fixture
def pipeline(selection_pipeline) -> Pipeline:
    built: Pipeline = selection_pipeline(target_ratio=2)
    return built


@pytest.fixture
def documents() -> list[Document]:
    return [
        Document(
            TEXTS["curie"],
            id="curie",
            metadata={
                "title": "Marie Curie",
                "url": "https://a",
                "tags": ["people"],
                "ragpress": {"x": 1},
            },
        ),
        Document(TEXTS["physics"], id="physics", metadata={"title": "Nobel Prize in Physics"}),
        Document(TEXTS["bread"], id="bread", metadata={"title": "Bread", "page": 3}),
    ]


@pytest.fixture
def retriever(fake_embedder) -> RagpressRetriever:
    passages = [
        Passage(t, title=k.title(), id=k, metadata={"source": f"{k}.md"}) for k, t in TEXTS.items()
    ]
    return RagpressRetriever(retriever=FaissRetriever.build(passages, fake_embedder), k=3)


def check_one_to_one(inputs: list[Document], outputs, *, key: str = "ragpress") -> None:
    assert [d.id for d in outputs] == [d.id for d in inputs]
    for before, after in zip(inputs, outputs, strict=True):
        stats = after.metadata[key]
        assert {k: v for k, v in after.metadata.items() if k != key} == {
            k: v for k, v in before.metadata.items() if k != key
        }
        assert stats["method"] == "sentence_selection"
        assert stats["tokens_before"] >= stats["tokens_after"]
        assert after.page_content == join_spans(before.page_content, stats["spans"])


def test_one_document_per_input_with_metadata_and_id_kept(pipeline, documents) -> None:
    originals = copy.deepcopy(documents)
    compressor = RagpressDocumentCompressor(pipeline=pipeline)
    out = compressor.compress_documents(documents, QUESTION)
    check_one_to_one(documents, out)
    assert documents == originals  # the inputs are not modified
    assert out[0].metadata["ragpress"]["x"] == 1  # keys already under the namespace stay
    assert "Röntgen" in out[1].page_content
    total_before = sum(d.metadata["ragpress"]["tokens_before"] for d in out)
    total_after = sum(d.metadata["ragpress"]["tokens_after"] for d in out)
    assert total_before / total_after >= 1.9


def test_metadata_survives_where_llmlingua_loses_it(pipeline) -> None:
    """LLMLinguaCompressor returns empty metadata for a document whose reference tag was
    compressed away, and may drop or reorder documents. Here a document compressed to nothing
    still comes back, in place, with its id and every metadata key."""
    docs = [
        Document(
            TEXTS["bread"],
            id="irrelevant",
            metadata={"title": "Bread", "acl": ["team-a"], "row": {"db": "kb", "pk": 17}},
        ),
        Document(TEXTS["physics"], id="relevant", metadata={"title": "Physics", "acl": []}),
    ]
    out = RagpressDocumentCompressor(pipeline=pipeline, target_tokens=14).compress_documents(
        docs, QUESTION
    )
    assert [d.id for d in out] == ["irrelevant", "relevant"]
    assert out[0].page_content == ""
    assert out[0].metadata["acl"] == ["team-a"] and out[0].metadata["row"] == {"db": "kb", "pk": 17}
    assert out[0].metadata["ragpress"]["tokens_after"] == 0
    assert out[0].metadata["ragpress"]["ratio"] is None
    dropped = RagpressDocumentCompressor(pipeline=pipeline, target_tokens=14, drop_empty=True)
    assert [d.id for d in dropped.compress_documents(docs, QUESTION)] == ["relevant"]


def test_document_subclasses_and_extra_fields_survive(pipeline) -> None:
    class StatefulDocument(Document):
        state: dict[str, Any] = {}  # noqa: RUF012 - a pydantic field

    doc = StatefulDocument(
        page_content=TEXTS["physics"], id="s", metadata={"title": "P"}, state={"q": 1}
    )
    out = RagpressDocumentCompressor(pipeline=pipeline).compress_documents([doc], QUESTION)
    assert type(out[0]) is StatefulDocument and out[0].state == {"q": 1}


async def test_async_is_native_and_matches_sync(pipeline, documents, monkeypatch) -> None:
    compressor = RagpressDocumentCompressor(pipeline=pipeline)
    sync_out = compressor.compress_documents(documents, QUESTION)

    def refuse(*args, **kwargs):
        raise AssertionError("acompress_documents must not fall back to the sync method")

    monkeypatch.setattr(RagpressDocumentCompressor, "compress_documents", refuse)
    async_out = await compressor.acompress_documents(documents, QUESTION)
    assert [(d.id, d.page_content, d.metadata) for d in async_out] == [
        (d.id, d.page_content, d.metadata) for d in sync_out
    ]


def test_contextual_compression_retriever_sync_with_callbacks(pipeline, retriever) -> None:
    recorder = Recorder()
    ccr = ContextualCompressionRetriever(
        base_compressor=RagpressDocumentCompressor(pipeline=pipeline), base_retriever=retriever
    )
    out = ccr.invoke(QUESTION, config={"callbacks": [recorder]})
    assert next(d.id for d in out) == "physics" and len(out) == 3
    assert "Röntgen" in out[0].page_content
    for doc in out:
        stats = doc.metadata["ragpress"]
        assert stats["retrieval_score"] is not None and stats["method"] == "sentence_selection"
        assert doc.metadata["source"] == f"{doc.id}.md"
    assert "RagpressDocumentCompressor" in recorder.started
    assert any(o.get("documents") == out for o in recorder.ended if isinstance(o, dict))


async def test_contextual_compression_retriever_async_with_callbacks(pipeline, retriever):
    recorder = AsyncRecorder()
    ccr = ContextualCompressionRetriever(
        base_compressor=RagpressDocumentCompressor(pipeline=pipeline), base_retriever=retriever
    )
    out = await ccr.ainvoke(QUESTION, config={"callbacks": [recorder]})
    assert next(d.id for d in out) == "physics"
    assert "RagpressDocumentCompressor" in recorder.started


def test_document_compressor_pipeline_with_a_splitter_and_two_stages(pipeline, documents):
    recorder = Recorder()
    splitter = CharacterTextSplitter(separator=". ", chunk_size=60, chunk_overlap=0)
    chain = DocumentCompressorPipeline(
        transformers=[
            splitter,
            RagpressDocumentCompressor(pipeline=pipeline, target_ratio=1.5),
            RagpressDocumentCompressor(pipeline=pipeline, target_ratio=1.2),
        ]
    )
    out = chain.compress_documents(documents, QUESTION, callbacks=[recorder])
    assert recorder.started.count("RagpressDocumentCompressor") == 2
    split = splitter.split_documents(documents)  # (the splitter itself does not keep ids)
    assert len(out) == len(split)
    for before, after in zip(split, out, strict=True):
        stats = after.metadata["ragpress"]
        assert stats["previous"]["method"] == "sentence_selection"  # the first stage's stats
        assert stats["tokens_before"] == stats["previous"]["tokens_after"]
        assert {k: v for k, v in after.metadata.items() if k != "ragpress"} == {
            k: v for k, v in before.metadata.items() if k != "ragpress"
        }


def test_lcel_chain_ending_in_a_chat_model(pipeline, retriever) -> None:
    recorder = Recorder()
    compressor = RagpressDocumentCompressor(pipeline=pipeline)
    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")
    llm = GenericFakeChatModel(messages=iter([AIMessage("Wilhelm Röntgen")]))
    chain = (
        {"docs": retriever, "question": RunnablePassthrough()}
        | compressor.as_runnable()
        | RunnablePassthrough.assign(answer=prompt | llm | StrOutputParser())
    )
    out = chain.invoke(QUESTION, config={"callbacks": [recorder]})
    assert out["answer"] == "Wilhelm Röntgen"
    stats = out["compression"]
    assert stats["tokens_saved"] == stats["tokens_before"] - stats["tokens_after"] > 0
    assert out["context"] == "\n\n".join(d.page_content for d in out["docs"] if d.page_content)
    assert recorder.prompts[0].startswith(f"Context:\n{out['context']}")  # the model saw it
    assert "Bread is made from flour." not in recorder.prompts[0]
    assert {"ragpress_compress", "RagpressDocumentCompressor"} <= set(recorder.started)
    assert "retriever:RagpressRetriever" in recorder.started


async def test_lcel_chain_async_and_batch(pipeline, retriever) -> None:
    compressor = RagpressDocumentCompressor(pipeline=pipeline)
    prompt = ChatPromptTemplate.from_template("{context}\n{question}")
    llm = GenericFakeChatModel(messages=iter([AIMessage("a"), AIMessage("b"), AIMessage("c")]))
    chain = (
        {"docs": retriever, "question": RunnablePassthrough()}
        | compressor.as_runnable()
        | RunnablePassthrough.assign(answer=prompt | llm | StrOutputParser())
    )
    single = await chain.ainvoke(QUESTION)
    assert single["answer"] == "a" and single["docs"][0].id == "physics"
    many = await chain.abatch(["Where was Marie Curie born?", "How is bread made?"])
    assert {m["answer"] for m in many} == {"b", "c"}
    assert many[1]["docs"][0].id == "bread"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["not", "a", "mapping"], "takes a mapping"),
        ({"question": "q"}, "no 'docs' key"),
        ({"docs": [], "question": {"question": "q"}}, "must be a string"),
        ({"docs": "text", "question": "q"}, "must be a list of Documents"),
        ({"docs": ["plain string"], "question": "q"}, r"documents\[0\] must be a langchain"),
    ],
)
def test_bad_runnable_input_names_the_key(pipeline, inputs, message) -> None:
    runnable = RagpressDocumentCompressor(pipeline=pipeline).as_runnable()
    with pytest.raises(RequestValidationError, match=message):
        runnable.invoke(inputs)


def test_errors_reach_the_callbacks_and_the_caller(pipeline, documents) -> None:
    recorder = Recorder()
    compressor = RagpressDocumentCompressor(pipeline=pipeline, target_tokens=3, keep=("Warsaw",))
    with pytest.raises(BudgetError):
        compressor.compress_documents(documents, QUESTION, callbacks=[recorder])
    assert len(recorder.errors) == 1 and isinstance(recorder.errors[0], BudgetError)


def test_bad_budget_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="give only one budget"):
        RagpressDocumentCompressor(target_ratio=2, rate=0.5)


async def test_no_documents_give_no_documents_even_with_a_retriever(
    selection_pipeline, retriever
) -> None:
    pipeline = selection_pipeline()
    pipeline.retriever = retriever.retriever  # a pipeline that retrieves when given no passages
    compressor = RagpressDocumentCompressor(pipeline=pipeline)
    assert compressor.compress_documents([], QUESTION) == []
    assert await compressor.acompress_documents([], QUESTION) == []
    out = compressor.as_runnable().invoke({"docs": [], "question": QUESTION})
    assert out["docs"] == [] and out["context"] == "" and out["compression"]["tokens_saved"] == 0


def test_spans_can_be_left_out(pipeline, documents) -> None:
    out = RagpressDocumentCompressor(pipeline=pipeline, include_spans=False).compress_documents(
        documents, QUESTION
    )
    assert all("spans" not in d.metadata["ragpress"] for d in out)
