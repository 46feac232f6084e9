"""CompLLM on CUDA in bfloat16: the same code paths as the CPU tests (run with -m gpu)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from ragpress.compressors.compllm import CompLLMCompressor  # noqa: E402
from ragpress.compressors.compllm.generation import EmbeddingGenerator  # noqa: E402
from ragpress.compressors.compllm.training import (  # noqa: E402
    TrainingExample,
    TrainingOptions,
    train,
)
from ragpress.types import CompressionOptions, Passage  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.model]

DOCS = [
    Passage("The Eiffel Tower in Paris was completed in 1889.", title="Eiffel"),
    Passage("Marie Curie won Nobel Prizes in 1903 and 1911.", title="Curie"),
]


@pytest.fixture
def cuda_compllm(compllm_adapter_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return CompLLMCompressor(str(compllm_adapter_dir), device="cuda", dtype="bfloat16")


def test_bf16_concepts_on_cuda_match_float32_on_cpu(cuda_compllm, compllm) -> None:
    gpu = cuda_compllm.compress(None, DOCS, CompressionOptions()).embeddings
    cpu = compllm.compress(None, DOCS, CompressionOptions()).embeddings
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    assert gpu.shape == cpu.shape
    cosine = torch.nn.functional.cosine_similarity(gpu.float().cpu(), cpu, dim=-1)
    assert float(cosine.min()) > 0.98


def test_streaming_on_cuda_equals_hf_generate(cuda_compllm) -> None:
    concepts = cuda_compllm.compress(None, DOCS, CompressionOptions()).embeddings
    prompt = cuda_compllm.prompt_embeddings("When was the tower completed?", concepts)
    text = EmbeddingGenerator(cuda_compllm.encoder).generate(prompt, max_new_tokens=8)
    with torch.no_grad(), cuda_compllm.encoder.frozen() as llm:
        oracle = llm.generate(inputs_embeds=prompt[None], max_new_tokens=8, do_sample=False)
    assert text == cuda_compllm.encoder.tokenizer.decode(oracle[0], skip_special_tokens=True)


def test_bf16_autocast_training_runs_and_checkpoints(tiny_llm_dir, tmp_path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    compressor = CompLLMCompressor.create(str(tiny_llm_dir), device="cuda", dtype="bfloat16")
    examples = [TrainingExample("When was it completed?", tuple(DOCS), "1889")] * 2
    options = TrainingOptions(steps=4, grad_accum=1, warmup_steps=1, save_every=2, precision="bf16")
    summary = train(compressor, examples, tmp_path, options)
    assert summary.last_step == 4 and all(torch.isfinite(torch.tensor(summary.losses)))
    assert (tmp_path / "checkpoints" / "step-0000004").is_dir()
