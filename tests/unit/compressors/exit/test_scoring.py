"""EXIT scoring: the paper's prompt, exact batched scores, truncation that keeps the question."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("peft")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ragpress.compressors.exit.compressor import ExitCompressor
from ragpress.compressors.exit.model import ExitClassifier
from ragpress.compressors.exit.prompt import EXIT_QUESTION
from ragpress.compressors.exit.scoring import ScoringLimits, common_prefix_length
from ragpress.exceptions import ConfigurationError, RequestValidationError
from ragpress.types import CompressionOptions, Passage

pytestmark = pytest.mark.model  # loads the tiny checkpoint the tests build
QUERY = "Who built the Eiffel Tower, and when was it completed?"
DOCS = [
    Passage(
        "The Eiffel Tower is in Paris. It was completed in 1889. Gustave Eiffel's company "
        "built it. It is made of wrought iron.",
        title="Eiffel Tower",
    ),
    Passage(
        "Berlin is the capital of Germany. The Brandenburg Gate stands in Berlin. Berlin has "
        "many museums. A river flows through the city.",
        title="Berlin",
    ),
    Passage("Bananas are yellow. Apples can be red or green. Grapes grow in bunches."),
    Passage("", title="Empty"),
    Passage(
        "The company was founded in 1998. Its headquarters are located in the north of the "
        "country. The old bridge crosses the river near the market. The market opens at dawn. "
        "The city council meets every week.",
        title="A company",
    ),
    Passage("Wilhelm Conrad Röntgen received the first Nobel Prize in Physics in 1901."),
]
TAIL = f"{EXIT_QUESTION}<end_of_turn>\n<start_of_turn>model\n"


@pytest.fixture(scope="module")
def reference(tiny_gemma_dir) -> tuple[Any, Any]:
    """The same checkpoint, loaded by plain transformers for the oracle."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma_dir).eval()
    return model, tokenizer


def oracle(model, tokenizer, texts: list[str]) -> list[float]:
    """EXIT scoring written out plainly: one prompt, one forward pass, softmax over Yes/No."""
    yes = tokenizer.encode("Yes", add_special_tokens=False)[0]
    no = tokenizer.encode("No", add_special_tokens=False)[0]
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        out.append(torch.softmax(logits[[yes, no]].float(), dim=-1)[0].item())
    return out


def test_prompt_is_the_papers_in_the_chat_template(exit_classifier) -> None:
    text = exit_classifier.render(
        "  who built it? ", "Eiffel Tower\nIt is in Paris.", " It was built. "
    )
    assert text == (
        "<bos><start_of_turn>user\nQuery:\nwho built it?\nFull context:\nEiffel Tower\n"
        "It is in Paris.\nSentence:\nIt was built.\nIs this sentence useful in answering the "
        'query? Answer only "Yes" or "No".<end_of_turn>\n<start_of_turn>model\n'
    )


def test_tokenizer_without_chat_template_gets_the_gemma_turns(
    tiny_gemma_dir, exit_classifier
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma_dir)
    tokenizer.chat_template = None
    plain = ExitClassifier(exit_classifier.model, tokenizer, name="t", revision="r")
    assert plain.render("q", "c", "s") == exit_classifier.render("q", "c", "s")


@pytest.mark.parametrize("context", ["document", "all"])
@pytest.mark.parametrize(
    "limits",
    [ScoringLimits(), ScoringLimits(batch_size=3, max_batch_tokens=400)],
    ids=["default", "small-batches"],
)
def test_batched_scores_equal_one_prompt_at_a_time(
    exit_classifier, reference: tuple[Any, Any], context, limits
) -> None:
    compressor = ExitCompressor(
        exit_classifier,
        context=context,
        batch_size=limits.batch_size,
        max_batch_tokens=limits.max_batch_tokens,
    )
    groups = compressor.prompts(QUERY, DOCS)
    batched = [s for group in compressor.score(QUERY, DOCS) for s in group]
    expected = oracle(*reference, [t for g in groups for t in g.texts])
    assert len(batched) == len(expected) == 17
    assert max(abs(a - b) for a, b in zip(batched, expected, strict=True)) < 1e-4
    assert max(expected) - min(expected) > 0.3  # the scores differ, so equality means something
    assert exit_classifier.score_one_by_one(groups) == [
        pytest.approx(g, abs=1e-4) for g in exit_classifier.score(groups, limits=limits)
    ]


def test_a_sentence_scores_the_same_alone_or_in_a_batch(exit_classifier) -> None:
    doc = DOCS[4]
    compressor = ExitCompressor(exit_classifier)
    together = compressor.score(QUERY, DOCS)[4]
    alone = compressor.score(QUERY, [doc])[0]
    assert together == pytest.approx(alone, abs=1e-5)


def test_common_prefix_leaves_every_prompt_a_token() -> None:
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical prompts
    assert common_prefix_length([[1, 2, 3]]) == 2
    assert common_prefix_length([[7, 2], [8, 2]]) == 0


def test_long_context_is_cut_and_the_question_survives(
    exit_classifier, reference: tuple[Any, Any]
) -> None:
    long_doc = Passage(
        " ".join(f"Sentence number {i} talks about the river and the bridge." for i in range(40))
        + " Gustave Eiffel's company built the tower.",
        title="Long",
    )
    limit = 160
    untruncated = ExitCompressor(exit_classifier).prompts(QUERY, [long_doc])[0]
    assert max(map(len, untruncated.ids)) > 2 * limit  # the test really exercises truncation
    # Right-truncation (the reference's bug) would cut the question and the model turn:
    assert not untruncated.texts[0].endswith(
        exit_classifier.tokenizer.decode(untruncated.ids[0][:limit])
    )

    compressor = ExitCompressor(exit_classifier, max_prompt_tokens=limit)
    fitted = compressor.prompts(QUERY, [long_doc])[0]
    assert fitted.kept_context_tokens is not None and fitted.context_tokens is not None
    assert fitted.truncated and fitted.kept_context_tokens < fitted.context_tokens
    sentences = [long_doc.text[s:e] for s, e in compressor.analyze([long_doc])[0].spans]
    for text, ids, sentence in zip(fitted.texts, fitted.ids, sentences, strict=True):
        assert len(ids) <= limit
        assert text.endswith(f"Sentence:\n{sentence}\n{TAIL}")  # sentence and question whole
        assert f"Query:\n{QUERY}\nFull context:\nLong\nSentence number 0" in text
    contexts = {t.split("Full context:\n")[1].split("\nSentence:\n")[0] for t in fitted.texts}
    assert len(contexts) == 1  # one cut shared by the document's sentences
    assert ("Long\n" + long_doc.text).startswith(contexts.pop())
    scores = compressor.score(QUERY, [long_doc])[0]
    assert scores == pytest.approx(oracle(*reference, list(fitted.texts)), abs=1e-4)
    result = compressor.compress(QUERY, [long_doc], CompressionOptions())
    assert any("was cut to its first" in note and "whole" in note for note in result.notes)


def test_a_query_that_leaves_no_room_is_a_request_error(exit_classifier) -> None:
    compressor = ExitCompressor(exit_classifier, max_prompt_tokens=64)
    with pytest.raises(RequestValidationError, match="even with no context") as info:
        compressor.compress("why " * 80, DOCS[:1], CompressionOptions())
    assert info.value.param == "query"


def test_yes_and_no_must_be_distinct_tokens(exit_classifier) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>")
    with pytest.raises(ConfigurationError, match="distinct first tokens"):
        ExitClassifier(exit_classifier.model, tokenizer, name="words", revision="r")


def _tiny(kind: str, tokenizer):
    from transformers import Gemma2Config, Gemma2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    sizes: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "initializer_range": 0.3,
        "tie_word_embeddings": False,
    }
    torch.manual_seed(0)
    if kind == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**sizes)).eval()
    window = {"gemma2-wide-window": 4096, "gemma2-narrow-window": 64}[kind]
    return Gemma2ForCausalLM(Gemma2Config(**sizes, sliding_window=window)).eval()


@pytest.mark.parametrize("kind", ["gemma2-wide-window", "gemma2-narrow-window", "qwen3"])
def test_other_architectures_score_exactly(exit_classifier, kind) -> None:
    """Sliding-window layers share prefixes inside the window and fall back beyond it."""
    model = _tiny(kind, exit_classifier.tokenizer)
    other = ExitClassifier(model, exit_classifier.tokenizer, name=kind, revision="r")
    compressor = ExitCompressor(other, batch_size=3, max_batch_tokens=400)
    groups = compressor.prompts(QUERY, DOCS)
    batched = other.score(groups, limits=ScoringLimits(batch_size=3, max_batch_tokens=400))
    assert batched == [pytest.approx(g, abs=1e-4) for g in other.score_one_by_one(groups)]


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-4), ("bfloat16", 3e-2)])
def test_batched_scores_on_gpu(tiny_gemma_dir, exit_classifier, dtype, tolerance) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpu = ExitClassifier.from_pretrained(str(tiny_gemma_dir), device="cuda", dtype=dtype)
    compressor = ExitCompressor(gpu, context="document", batch_size=4)
    groups = compressor.prompts(QUERY, DOCS)
    batched = gpu.score(groups, limits=ScoringLimits(batch_size=4))
    assert batched == [pytest.approx(g, abs=tolerance) for g in gpu.score_one_by_one(groups)]
    assert batched == [pytest.approx(g, abs=tolerance) for g in exit_classifier.score(groups)]
