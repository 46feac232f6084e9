from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from ragpress.exceptions import ConfigurationError, RequestValidationError, RetrievalError
from ragpress.retrieval.faiss import FaissRetriever, IndexOptions
from ragpress.retrieval.index_format import IndexType, read_index_config
from ragpress.types import Passage, Retriever

DOCS = [
    Passage(
        "Marie Curie won two Nobel Prizes in physics and chemistry.",
        title="Curie",
        id="a",
        metadata={"source": "wiki", "tags": ["science"], "year": 1911},
    ),
    Passage("The Eiffel Tower is in Paris and was finished in 1889.", title="Eiffel", id="b"),
    Passage(
        "Bread is made from flour, water, salt and yeast.",
        title="Bread",
        id="c",
        metadata={"nested": {"ok": True}},
    ),
    Passage("Volcanoes erupt when magma reaches the surface of the earth.", id="d"),
]


class TableEmbedder:
    """Vectors looked up by text ("v17" -> row 17): clustered data without a model."""

    def __init__(self, vectors: np.ndarray, fingerprint: str = "table") -> None:
        self.vectors = vectors
        self.dimension = vectors.shape[1]
        self.fingerprint = fingerprint
        self.embedded = 0

    def embed(self, texts, *, kind="passage"):
        self.embedded += len(texts)
        return self.vectors[[int(t.rsplit("v", 1)[1]) for t in texts]]


def clustered(n: int, dimension: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dimension))
    points = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dimension))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


@pytest.fixture
def index(fake_embedder) -> FaissRetriever:
    return FaissRetriever.build(DOCS, fake_embedder, IndexOptions(index_type="flat"))


def test_exact_search_finds_the_passage_itself_best_first(index: FaissRetriever) -> None:
    assert isinstance(index, Retriever)
    hits = index.search("Marie Curie Nobel prizes physics chemistry", 3)
    assert next(h.passage.id for h in hits) == "a"
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and len(hits) == 3
    assert hits[0].passage is DOCS[0]
    assert len(index.search("anything", 50)) == len(DOCS)  # k above the size: every passage


def test_round_trip_keeps_passages_config_and_results(index, fake_embedder, tmp_path) -> None:
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        "config.json",
        "index.faiss",
        "passages.jsonl",
    ]
    config = read_index_config(tmp_path / "idx")
    assert config["dimension"] == fake_embedder.dimension
    assert config["metric"] == "inner_product" and config["index_type"] == "flat"
    assert config["embedder"]["fingerprint"] == fake_embedder.fingerprint
    loaded = FaissRetriever.load(tmp_path / "idx", fake_embedder)
    assert loaded.passages == DOCS  # text, title, id and metadata, nested values included
    for query in ("Paris tower", "yeast bread", "magma"):
        before = [(h.passage.id, round(h.score, 5)) for h in index.search(query, 4)]
        after = [(h.passage.id, round(h.score, 5)) for h in loaded.search(query, 4)]
        assert before == after


def test_another_embedder_is_refused_naming_both(index, fake_embedder, tmp_path) -> None:
    index.save(tmp_path)
    other = type(fake_embedder)(dimension=256)
    other.fingerprint = "hashing-v2"
    with pytest.raises(RetrievalError) as info:
        FaissRetriever.load(tmp_path, other)
    assert "hashing-256" in str(info.value) and "hashing-v2" in str(info.value)
    assert "rebuild" in str(info.value)


def test_another_dimension_is_refused_naming_both(index, fake_embedder, tmp_path) -> None:
    index.save(tmp_path)
    narrow = type(fake_embedder)(dimension=64)
    narrow.fingerprint = "hashing-256"  # same claimed model, different vectors
    with pytest.raises(RetrievalError, match="dimension 256, the embedder 64"):
        FaissRetriever.load(tmp_path, narrow)


def test_files_from_different_saves_are_detected(index, fake_embedder, tmp_path) -> None:
    index.save(tmp_path)
    with (tmp_path / "passages.jsonl").open("a") as handle:
        handle.write(
            json.dumps({"text": "x", "title": None, "id": None, "metadata": {}, "hash": "0"}) + "\n"
        )
    with pytest.raises(RetrievalError, match="interrupted"):
        FaissRetriever.load(tmp_path, fake_embedder)


def test_a_folder_without_an_index_says_how_to_build_one(fake_embedder, tmp_path) -> None:
    with pytest.raises(RetrievalError, match="ragpress index build"):
        FaissRetriever.load(tmp_path, fake_embedder)
    (tmp_path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(RetrievalError, match="does not describe a ragpress FAISS index"):
        FaissRetriever.load(tmp_path, fake_embedder)


def test_add_embeds_only_texts_the_index_does_not_hold(index, fake_embedder) -> None:
    fake_embedder.calls.clear()
    new = Passage("Glaciers carve valleys over thousands of years.", title="Ice", id="e")
    duplicate = Passage(DOCS[1].text, title=DOCS[1].title, id="b-copy", metadata={"copy": 1})
    stats = index.add([new, duplicate, new])
    assert (stats.passages, stats.embedded, stats.reused) == (3, 1, 2)
    assert fake_embedder.calls == [1]
    assert len(index) == 7
    assert index.search("glaciers valleys", 1)[0].passage.id == "e"
    ids = {h.passage.id for h in index.search(DOCS[1].text, 3)}
    assert {"b", "b-copy"} <= ids


def test_rebuild_reuses_vectors_of_unchanged_chunks(index, fake_embedder, tmp_path) -> None:
    index.save(tmp_path)
    old = FaissRetriever.load(tmp_path, fake_embedder)
    fake_embedder.calls.clear()
    edited = [*DOCS[:3], Passage("Volcanoes erupt violently.", id="d")]
    rebuilt = FaissRetriever.build(edited, fake_embedder, reuse=old)
    assert fake_embedder.calls == [1]
    assert (rebuilt.last_build.embedded, rebuilt.last_build.reused) == (1, 3)
    fresh = FaissRetriever.build(edited, type(fake_embedder)())
    query = "volcano eruption"
    assert [h.score for h in rebuilt.search(query, 4)] == pytest.approx(
        [h.score for h in fresh.search(query, 4)]
    )


def test_reusing_another_embedders_index_is_refused(index, fake_embedder) -> None:
    other = type(fake_embedder)(dimension=256)
    other.fingerprint = "other"
    with pytest.raises(RetrievalError, match="cannot reuse"):
        FaissRetriever.build(DOCS, other, reuse=index)
    with pytest.raises(RetrievalError, match="embed_title"):
        FaissRetriever.build(DOCS, index.embedder, IndexOptions(embed_title=False), reuse=index)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_indexes_agree_with_exact_search(index_type: IndexType, tmp_path: Path) -> None:
    vectors = clustered(4000)
    embedder = TableEmbedder(vectors)
    passages = [Passage(f"v{i}", id=str(i)) for i in range(len(vectors))]
    exact = FaissRetriever.build(passages, embedder, IndexOptions(index_type="flat"))
    approx = FaissRetriever.build(passages, embedder, IndexOptions(index_type=index_type))
    queries = clustered(200, seed=1)
    truth = exact.search_vectors(queries, 10)
    found = approx.search_vectors(queries, 10)
    recall = np.mean(
        [
            len({h.passage.id for h in f} & {h.passage.id for h in t}) / 10
            for f, t in zip(found, truth, strict=True)
        ]
    )
    assert recall >= 0.9, recall
    if index_type == "ivf":  # 4 * sqrt(n) cells, capped at n / 39; a quarter of them searched
        assert (approx.options.nlist, approx.options.nprobe) == (102, 25)
    approx.save(tmp_path)
    reloaded = FaissRetriever.load(tmp_path, embedder)
    assert reloaded.options == approx.options
    again = reloaded.search_vectors(queries[:20], 10)
    assert [[h.passage.id for h in r] for r in again] == [
        [h.passage.id for h in r] for r in found[:20]
    ]
    embedder.embedded = 0
    rebuilt = FaissRetriever.build(
        passages, embedder, IndexOptions(index_type=index_type), reuse=reloaded
    )
    assert embedder.embedded == 0 and len(rebuilt) == len(passages)  # vectors come back exactly


def test_auto_is_exact_for_small_corpora(fake_embedder) -> None:
    assert FaissRetriever.build(DOCS, fake_embedder).options.index_type == "flat"


def test_ivf_needs_enough_points_per_cell(fake_embedder) -> None:
    with pytest.raises(ConfigurationError, match="nlist=10 needs at least 390"):
        FaissRetriever.build(DOCS, fake_embedder, IndexOptions(index_type="ivf", nlist=10))


def test_l2_metric_scores_higher_for_closer(fake_embedder, tmp_path) -> None:
    index = FaissRetriever.build(DOCS, fake_embedder, IndexOptions(metric="l2"))
    hits = index.search(f"{DOCS[2].title}\n{DOCS[2].text}", 4)  # what was embedded
    assert hits[0].passage.id == "c" and hits[0].score == pytest.approx(0.0, abs=1e-5)
    assert all(h.score <= 0 for h in hits)
    index.save(tmp_path)
    assert FaissRetriever.load(tmp_path, fake_embedder).options.metric == "l2"


def test_empty_index_searches_to_nothing(fake_embedder, tmp_path) -> None:
    index = FaissRetriever.build([], fake_embedder)
    assert index.search("anything", 3) == []
    index.save(tmp_path)
    assert len(FaissRetriever.load(tmp_path, fake_embedder)) == 0


def test_metadata_that_cannot_be_saved_is_refused_before_anything_is_built(fake_embedder):
    bad = [DOCS[0], Passage("x", metadata={"when": object()})]
    with pytest.raises(RequestValidationError) as info:
        FaissRetriever.build(bad, fake_embedder)
    assert info.value.param == "passages[1].metadata"
    assert fake_embedder.calls == []


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_a_request_error(index, k) -> None:
    with pytest.raises(RequestValidationError, match="k="):
        index.search("x", k)


def test_cuda_without_gpu_faiss_is_a_configuration_error(fake_embedder) -> None:
    import faiss

    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is available")
    with pytest.raises(ConfigurationError, match="faiss-gpu"):
        FaissRetriever.build(DOCS, fake_embedder, device="cuda")
    assert FaissRetriever.build(DOCS, fake_embedder, device="auto").device == "cpu"


@pytest.mark.gpu
def test_gpu_index_matches_cpu(fake_embedder, tmp_path) -> None:
    vectors = clustered(2000, dimension=64)
    embedder = TableEmbedder(vectors)
    passages = [Passage(f"v{i}") for i in range(len(vectors))]
    cpu = FaissRetriever.build(passages, embedder, IndexOptions(index_type="flat"), device="cpu")
    gpu = FaissRetriever.build(passages, embedder, IndexOptions(index_type="flat"), device="cuda")
    assert gpu.device.startswith("cuda")
    queries = clustered(50, dimension=64, seed=3)
    assert [[h.passage.text for h in r] for r in gpu.search_vectors(queries, 5)] == [
        [h.passage.text for h in r] for r in cpu.search_vectors(queries, 5)
    ]
    gpu.save(tmp_path)
    assert len(FaissRetriever.load(tmp_path, embedder, device="cpu")) == len(passages)


def test_concurrent_searches_and_additions(fake_embedder) -> None:
    index = FaissRetriever.build(DOCS, fake_embedder)
    errors: list[BaseException] = []

    def search() -> None:
        try:
            for _ in range(50):
                hits = index.search("Paris", 3)
                assert all(h.passage.text for h in hits)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(20):
        index.add([Passage(f"extra passage number {i} about Paris", id=f"x{i}")])
    for t in threads:
        t.join()
    assert not errors and len(index) == len(DOCS) + 20
