"""Benchmark of the visual compressors, side by side in one run.

1. **Selection time** of each token reducer for 576 tokens (one LLaVA-1.5 image) and 2,880
   tokens (LLaVA-NeXT AnyRes: 5 x 576), keeping 10%: fastest of N calls, in ms. CPU always;
   CUDA too when a GPU is present.
2. **Prefill time** of tiny LLaVA, Qwen2-VL and LLaVA-NeXT checkpoints (built here, random
   weights, 576 image tokens; LLaVA-NeXT 744: base + 2x2 crops + row newlines) with and without
   pruning at 10% and 25% kept: the whole forward (vision tower + LLM) and the LLM alone,
   fastest of N runs in ms, with the speed-up.
3. **API images**: for the rendered pages shipped in tests/fixtures/visual, image tokens before
   and after the image compressor for each provider family, and the OCR route: character error
   rate against the ground truth, text tokens, and whether text would be sent instead.

    .venv/bin/python bench/visual.py             # everything (a few minutes on 2 cores)
    .venv/bin/python bench/visual.py --quick     # fewer repeats
    .venv/bin/python bench/visual.py --skip-ocr  # no OCR (the slowest part on CPU)
    .venv/bin/python bench/visual.py --prefill-only  # only the prefill table
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ragpress.compressors.visual.api.image import ImageCompressor
from ragpress.compressors.visual.api.ocr import RapidOcrEngine, character_error_rate, read_page
from ragpress.compressors.visual.api.parts import ImagePartCompressor
from ragpress.compressors.visual.vlm.hooks import Method, prune_vlm_inputs
from ragpress.compressors.visual.vlm.reducers import (
    divprune,
    spatial_pool,
    tome_reduce,
    visionzip,
    vtc_cls,
)
from ragpress.tokens import get_token_counter

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "visual"
MODELS = ["gpt-4o", "gpt-4.1-mini", "claude-sonnet-4-5", "gemini-2.0-flash"]


def best_ms(fn: Any, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls, in ms (the minimum is robust to other jobs' noise)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def selection_times(repeats: int) -> None:
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    print("\n### Selection time (best ms of N, one image, keep 10%)\n")
    print("| device | tokens | pool | DivPrune | VTC-CLS | VisionZip | ToMe |")
    print("|---|---|---|---|---|---|---|")
    for device in devices:
        for tokens, grid in ((576, (24, 24)), (2880, (48, 60))):
            gen = torch.Generator().manual_seed(tokens)
            projected = torch.randn(1, tokens, 4096, generator=gen).to(device)
            hidden = torch.randn(1, tokens, 1024, generator=gen).to(device)
            keys = torch.randn(1, tokens, 64, generator=gen).to(device)
            attention = torch.rand(1, 16, tokens, generator=gen).softmax(-1).to(device)
            layers = torch.rand(1, 7, 16, tokens, generator=gen).to(device)
            k = round(0.1 * tokens)
            dominant = round(k * 54 / 64)
            calls = {
                "pool": partial(spatial_pool, hidden, grid, k),
                "divprune": partial(divprune, projected, k),
                "vtc_cls": partial(vtc_cls, layers, k),
                "visionzip": partial(
                    visionzip, hidden, attention, keys, dominant=dominant, contextual=k - dominant
                ),
                "tome": partial(tome_reduce, hidden, k, metric=keys),
            }
            ms = {name: best_ms(fn, repeats) for name, fn in calls.items()}
            cells = " | ".join(f"{ms[n]:.2f}" for n in calls)
            print(f"| {device} | {tokens} | {cells} |")


def tiny_clip_llama(image_size: int) -> dict[str, Any]:
    """The LLaVA-family parts shared by the tiny LLaVA and LLaVA-NeXT: a 4-layer CLIP tower and
    a 6-layer Llama, with the placeholder and feature settings."""
    from transformers import CLIPVisionConfig, LlamaConfig

    return dict(
        vision_config=CLIPVisionConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            image_size=image_size, patch_size=14, projection_dim=64,
        ),
        text_config=LlamaConfig(
            vocab_size=512, hidden_size=256, intermediate_size=704, num_hidden_layers=6,
            num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
        image_token_id=500, vision_feature_layer=-2, vision_feature_select_strategy="default",
        pad_token_id=0,
    )  # fmt: skip


def tiny_llava() -> tuple[Any, dict[str, torch.Tensor]]:
    from transformers import LlavaConfig
    from transformers import LlavaForConditionalGeneration as Llava

    torch.manual_seed(0)
    config = LlavaConfig(**tiny_clip_llama(336))
    model = Llava(config).eval()  # type: ignore[no-untyped-call]  # transformers' eval()
    ids = torch.tensor([[1, *range(10, 30), *[500] * 576, *range(30, 90)]])
    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}


def tiny_qwen2_vl() -> tuple[Any, dict[str, torch.Tensor]]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    # the token ids go through the config's **kwargs, which its typed signature does not show
    config = Qwen2VLConfig(  # type: ignore[call-arg]
        text_config=dict(
            vocab_size=512, hidden_size=256, intermediate_size=704, num_hidden_layers=6,
            num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "mrope_section": [8, 4, 4],
                             "rope_theta": 10000.0},
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
        vision_config=dict(depth=4, embed_dim=64, hidden_size=256, num_heads=4, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=500, video_token_id=501, vision_start_token_id=502,
        vision_end_token_id=503, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    model = Qwen2VLForConditionalGeneration(config).eval()  # type: ignore[no-untyped-call]
    h = w = 48  # 48 x 48 patches -> 576 merged tokens
    ids = torch.tensor([[1, *range(10, 30), 502, *[500] * 576, 503, *range(30, 90)]])
    return model, {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(h * w, 3 * 2 * 14 * 14, generator=torch.Generator()),
        "image_grid_thw": torch.tensor([[1, h, w]]),
        "mm_token_type_ids": (ids == 500).int(),
    }


def tiny_llava_next() -> tuple[Any, dict[str, torch.Tensor]]:
    """LLaVA-NeXT: a 168 px tower (12 x 12 = 144 tokens a pass), a 336 x 336 image as base + 2x2
    crops: 144 + 24 rows x (24 + 1 newline) = 744 image tokens."""
    from transformers import LlavaNextConfig
    from transformers import LlavaNextForConditionalGeneration as LlavaNext

    torch.manual_seed(0)
    config = LlavaNextConfig(
        **tiny_clip_llama(168), image_grid_pinpoints=[[168, 336], [336, 168], [336, 336]]
    )
    model = LlavaNext(config).eval()  # type: ignore[no-untyped-call]
    ids = torch.tensor([[1, *range(10, 30), *[500] * 744, *range(30, 90)]])
    pixels = torch.randn(1, 5, 3, 168, 168, generator=torch.Generator().manual_seed(0))
    return model, {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": pixels,
        "image_sizes": torch.tensor([[336, 336]]),
    }


def llm_only_ms(model: Any, prepared: dict[str, Any], repeats: int) -> float:
    """Best ms of the language model alone on the embeddings ``model`` would give it."""
    language_model = model.model.language_model
    seen: dict[str, Any] = {}

    def grab(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen.update(kwargs)

    handle = language_model.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(**prepared, use_cache=False)
    handle.remove()
    wanted = ("inputs_embeds", "attention_mask", "position_ids")
    call = {key: value for key, value in seen.items() if key in wanted}
    with torch.no_grad():
        return best_ms(partial(language_model, **call, use_cache=False), repeats)


def forward_ms(model: Any, inputs: dict[str, Any], repeats: int) -> float:
    with torch.no_grad():
        return best_ms(partial(model, **inputs, use_cache=False), repeats)


def pruned_forward_ms(
    model: Any, inputs: dict[str, Any], keep: float, method: Method, repeats: int
) -> float:
    """Best ms of pruning plus the forward on the pruned inputs."""

    def run() -> None:
        pruned = prune_vlm_inputs(model, inputs, keep=keep, method=method)
        with torch.no_grad():
            model(**pruned.inputs, use_cache=False)

    return best_ms(run, repeats)


PrefillModel = tuple[str, Callable[[], tuple[Any, dict[str, torch.Tensor]]], tuple[Method, ...]]
PREFILL_MODELS: tuple[PrefillModel, ...] = (
    ("LLaVA", tiny_llava, ("divprune", "pool")),
    ("Qwen2-VL", tiny_qwen2_vl, ("divprune", "pool")),
    # AnyRes: the budget is split across base and crops by the default thumbnail rule.
    ("LLaVA-NeXT", tiny_llava_next, ("divprune", "vtc_cls", "globalcom2")),
)


def prefill_times(repeats: int) -> None:
    print(
        "\n### Prefill time, tiny checkpoints, 576 image tokens "
        "(LLaVA-NeXT: 744 incl. newlines) (best ms of N, CPU)\n"
    )
    print(
        "| model | kept | method | tokens in LLM | forward incl. pruning | speed-up "
        "| LLM only | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, build, methods in PREFILL_MODELS:
        model, inputs = build()
        full = forward_ms(model, inputs, repeats)
        full_llm = llm_only_ms(model, inputs, repeats)
        length = inputs["input_ids"].shape[1]
        print(f"| {name} | 100% | - | {length} | {full:.1f} | 1.00x | {full_llm:.1f} | 1.00x |")
        for keep in (0.25, 0.10):
            for method in methods:
                ms = pruned_forward_ms(model, inputs, keep, method, repeats)
                pruned = prune_vlm_inputs(model, inputs, keep=keep, method=method)
                llm = llm_only_ms(model, pruned.inputs, repeats)
                print(
                    f"| {name} | {keep:.0%} | {method} | {pruned.prompt_length} | {ms:.1f} "
                    f"| {full / ms:.2f}x | {llm:.1f} | {full_llm / llm:.2f}x |"
                )


def api_pages(skip_ocr: bool) -> None:
    truth = json.loads((FIXTURES / "ground_truth.json").read_text())
    pages = sorted(FIXTURES.glob("*.png"))
    print("\n### API image tokens before -> after, shipped pages\n")
    print("| page | size | " + " | ".join(MODELS) + " |")
    print("|---|---|" + "---|" * len(MODELS))
    for path in pages:
        data = path.read_bytes()
        size = "x".join(map(str, Image.open(io.BytesIO(data)).size))
        cells = []
        for model in MODELS:
            result = ImageCompressor(model).compress(data)
            assert result.tokens_after <= result.tokens_before
            detail = " (low)" if result.detail == "low" else ""
            cells.append(f"{result.tokens_before} -> {result.tokens_after}{detail}")
        print(f"| {path.name} | {size} | " + " | ".join(cells) + " |")
    if skip_ocr:
        return
    engine = RapidOcrEngine()
    counter = get_token_counter("o200k_base")
    print("\n### OCR route (RapidOCR PP-OCRv6 small, CPU)\n")
    print("| page | CER | mean confidence | ink in text lines | text tokens (o200k) "
          "| gpt-4o image after | route for gpt-4o | route for claude | OCR s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for path in pages:
        data = path.read_bytes()
        started = time.perf_counter()
        ocr = read_page(Image.open(io.BytesIO(data)), engine)
        seconds = time.perf_counter() - started
        cer = character_error_rate(truth[path.name], ocr.text)
        routes = []
        for model in ("gpt-4o", "claude-sonnet-4-5"):
            url = "data:image/png;base64," + base64.b64encode(data).decode()
            part = {"type": "image_url", "image_url": {"url": url}}
            routes.append(ImagePartCompressor(model, ocr_engine=engine).compress(part).route)
        image_after = ImageCompressor("gpt-4o").compress(data).tokens_after
        print(f"| {path.name} | {cer:.4f} | {ocr.mean_confidence:.3f} "
              f"| {ocr.ink_coverage:.2f} | {counter.count(ocr.text)} | {image_after} "
              f"| {routes[0]} | {routes[1]} | {seconds:.1f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--skip-ocr", action="store_true", help="skip the OCR route table")
    parser.add_argument("--prefill-only", action="store_true", help="only the prefill table")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 9
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.prefill_only:
        prefill_times(repeats)
        return
    selection_times(repeats)
    prefill_times(repeats)
    api_pages(args.skip_ocr)


if __name__ == "__main__":
    main()
