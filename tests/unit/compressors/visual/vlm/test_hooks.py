"""Pruned generation on tiny LLaVA and Qwen2-VL checkpoints built here and loaded from disk."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from torch.utils.hooks import RemovableHandle  # noqa: E402

from ragpress.compressors.visual.vlm.hooks import (  # noqa: E402
    Method,
    generate_pruned,
    prune_vlm_inputs,
)
from ragpress.exceptions import ConfigurationError, RequestValidationError  # noqa: E402

pytestmark = pytest.mark.model

LLAVA_IMAGE = 120
QWEN_IMAGE, QWEN_START, QWEN_END = 90, 92, 93


def tiny_llava_parts(max_positions: int = 256) -> dict[str, Any]:
    """The tiny CLIP tower (48 px, 8 px patches: 6 x 6 tokens) and Llama LLM of the LLaVA tests."""
    from transformers import CLIPVisionConfig, LlamaConfig

    return dict(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            image_size=48, patch_size=8, projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
        image_token_id=LLAVA_IMAGE, vision_feature_layer=-2,
        vision_feature_select_strategy="default", pad_token_id=0,
    )  # fmt: skip


def save_and_load(model_class, config, folder):
    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    return model_class.from_pretrained(folder).eval()


@pytest.fixture(scope="session")
def llava(tmp_path_factory: pytest.TempPathFactory):
    from transformers import LlavaConfig
    from transformers import LlavaForConditionalGeneration as Llava

    folder = tmp_path_factory.mktemp("tiny-llava")
    return save_and_load(Llava, LlavaConfig(**tiny_llava_parts()), folder)


@pytest.fixture(scope="session")
def qwen2_vl(tmp_path_factory: pytest.TempPathFactory):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    # the token ids go through the config's **kwargs, which its typed signature does not show
    config = Qwen2VLConfig(  # type: ignore[call-arg]
        text_config=dict(
            vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1],
                             "rope_theta": 10000.0},
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=QWEN_IMAGE, video_token_id=91, vision_start_token_id=QWEN_START,
        vision_end_token_id=QWEN_END, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-qwen2-vl")
    Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
    return Qwen2VLForConditionalGeneration.from_pretrained(folder).eval()


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def llava_inputs() -> dict[str, Any]:
    # Row 0: one image; row 1: two images back to back (36 placeholders each), left padded.
    image = [LLAVA_IMAGE] * 36
    ids, mask = left_pad([[1, 5, *image, 6, 7], [1, 9, *image, *image, 10, 11, 12]])
    generator = torch.Generator().manual_seed(1)
    return {"input_ids": ids, "attention_mask": mask,
            "pixel_values": torch.randn(3, 3, 48, 48, generator=generator)}  # fmt: skip


def qwen_inputs() -> dict[str, Any]:
    # Row 0: an 8x12-patch image (24 tokens); row 1: 8x8 and 4x4 images (16 + 4 tokens).
    grids = [(1, 8, 12), (1, 8, 8), (1, 4, 4)]
    runs = [[QWEN_START, *[QWEN_IMAGE] * (h * w // 4), QWEN_END] for _, h, w in grids]
    ids, mask = left_pad([[1, 5, *runs[0], 6, 7, 8], [1, 9, *runs[1], 10, *runs[2], 11]])
    patches = sum(t * h * w for t, h, w in grids)
    generator = torch.Generator().manual_seed(2)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": torch.randn(patches, 3 * 2 * 14 * 14, generator=generator),
        "image_grid_thw": torch.tensor(grids),
        "mm_token_type_ids": (ids == QWEN_IMAGE).int(),
    }


def greedy(model, inputs: dict[str, Any], steps: int = 6) -> torch.Tensor:
    out: torch.Tensor = model.generate(**inputs, max_new_tokens=steps, do_sample=False)
    return out[:, inputs["input_ids"].shape[1] :]


@pytest.mark.parametrize("method", ["divprune", "vtc_cls", "tome", "pool"])
def test_llava_keeping_every_token_is_bit_identical(llava, method: Method) -> None:
    inputs = llava_inputs()
    pruned = prune_vlm_inputs(llava, inputs, keep=1.0, method=method)
    assert pruned.tokens_before == pruned.tokens_after == 108
    assert torch.equal(pruned.inputs["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        full = llava(**inputs).logits
        mine = llava(**pruned.inputs).logits
    assert torch.equal(full, mine)
    assert torch.equal(greedy(llava, pruned.inputs), greedy(llava, inputs))


@pytest.mark.parametrize("method", ["divprune", "vtc_cls", "visionzip", "tome", "pool"])
def test_llava_generates_with_k_tokens(llava, method: Method) -> None:
    inputs = llava_inputs()
    pruned = prune_vlm_inputs(llava, inputs, keep=9, method=method)
    assert pruned.tokens_after == 27 and [len(k) for k in pruned.keep_indices] == [9, 9, 9]
    assert all(bool((k.diff() > 0).all()) for k in pruned.keep_indices)
    ids = pruned.inputs["input_ids"]
    assert (ids == LLAVA_IMAGE).sum(dim=1).tolist() == [9, 18]
    assert ids.shape[1] == inputs["input_ids"].shape[1] - 54  # the longest row lost 2 x 27
    # Text around the images survives in order, left padding preserved.
    assert ids[1, -3:].tolist() == [10, 11, 12]
    assert ids[0].tolist() == [0] * 10 + [1, 5, *[LLAVA_IMAGE] * 9, 6, 7]
    assert pruned.inputs["attention_mask"][0].tolist() == [0] * 10 + [1] * 13
    new = generate_pruned(llava, inputs, keep=9, method=method, max_new_tokens=5, do_sample=False)
    assert new.shape == (2, 5)


def test_llava_pruning_equals_running_the_llm_on_the_kept_tokens(llava) -> None:
    # Single row, no padding: the pruned forward must equal the language model run by hand on
    # the text embeddings with the kept image features scattered in, positions 0..L'-1.
    image = [LLAVA_IMAGE] * 36
    ids = torch.tensor([[1, 5, *image, 6, 7]])
    pixel_values = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": pixel_values,
    }
    pruned = prune_vlm_inputs(llava, inputs, keep=0.25)
    with torch.no_grad():
        feats = llava.model.get_image_features(pixel_values=pixel_values).pooler_output[0]
        kept = feats[pruned.keep_indices[0]]
        short = pruned.inputs["input_ids"]
        embeds = llava.model.get_input_embeddings()(short)
        embeds[short == LLAVA_IMAGE] = kept
        by_hand = llava.lm_head(llava.model.language_model(inputs_embeds=embeds).last_hidden_state)
        assert torch.allclose(llava(**pruned.inputs).logits, by_hand, atol=1e-6)


def record_positions(model) -> tuple[list[torch.Tensor], RemovableHandle]:
    seen: list[torch.Tensor] = []

    def hook(_module, _args, kwargs):
        seen.append(kwargs["position_ids"].clone())

    return seen, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("method", ["divprune", "tome", "pool"])
def test_qwen2_vl_keeping_every_token_is_bit_identical(qwen2_vl, method: Method) -> None:
    inputs = qwen_inputs()
    pruned = prune_vlm_inputs(qwen2_vl, inputs, keep=1.0, method=method)
    assert pruned.tokens_before == pruned.tokens_after == 44
    with torch.no_grad():
        assert torch.equal(qwen2_vl(**inputs).logits, qwen2_vl(**pruned.inputs).logits)
    assert torch.equal(greedy(qwen2_vl, pruned.inputs), greedy(qwen2_vl, inputs))


@pytest.mark.parametrize("method", ["divprune", "tome", "pool"])
def test_qwen2_vl_kept_tokens_keep_their_mrope_positions(qwen2_vl, method: Method) -> None:
    inputs = qwen_inputs()
    seen, handle = record_positions(qwen2_vl)
    try:
        greedy(qwen2_vl, inputs, steps=3)
        full_prefill, *full_decode = seen[:]
        seen.clear()
        pruned = prune_vlm_inputs(qwen2_vl, inputs, keep=0.25, method=method)
        greedy(qwen2_vl, pruned.inputs, steps=3)
        prefill, *decode = seen
    finally:
        handle.remove()
    assert [len(k) for k in pruned.keep_indices] == [6, 4, 1]
    # Prefill: the M-RoPE rows of the kept tokens are the unpruned ones, in order.
    images_of_row = {0: [0], 1: [1, 2]}
    for b in range(2):
        attended = inputs["attention_mask"][b].bool()
        row_ids = inputs["input_ids"][b][attended]
        keep = row_ids != QWEN_IMAGE
        image_cols = (row_ids == QWEN_IMAGE).nonzero()[:, 0]
        offset = 0
        for image in images_of_row[b]:
            keep[image_cols[offset + pruned.keep_indices[image]]] = True
            offset += {0: 24, 1: 16, 2: 4}[image]
        original = full_prefill[1:, b][:, attended]
        mine = prefill[1:, b][:, pruned.inputs["attention_mask"][b].bool()]
        assert torch.equal(mine, original[:, keep])
    # Decode resumes at max + 1 of the unpruned sequence, step by step.
    assert len(decode) == len(full_decode) == 2
    for mine, theirs in zip(decode, full_decode, strict=True):
        assert torch.equal(mine[1:], theirs[1:])
    assert torch.equal(
        decode[0][1:, :, 0], full_prefill[1:].amax(dim=(0, 2))[None].expand(3, -1) + 1
    )


def test_qwen2_vl_rejects_cls_methods_and_missing_fields(qwen2_vl) -> None:
    with pytest.raises(ConfigurationError, match="no \\[CLS\\]"):
        prune_vlm_inputs(qwen2_vl, qwen_inputs(), method="vtc_cls")
    inputs = qwen_inputs()
    del inputs["image_grid_thw"]
    with pytest.raises(RequestValidationError, match="image_grid_thw"):
        prune_vlm_inputs(qwen2_vl, inputs)


def test_mismatched_placeholders_and_bad_method(llava) -> None:
    inputs = llava_inputs()
    inputs["input_ids"] = inputs["input_ids"][:, 3:]
    inputs["attention_mask"] = inputs["attention_mask"][:, 3:]
    with pytest.raises(RequestValidationError, match="image placeholders"):
        prune_vlm_inputs(llava, inputs)
    with pytest.raises(ConfigurationError, match="method="):
        prune_vlm_inputs(llava, llava_inputs(), method="fastv")  # type: ignore[arg-type]


# --- LLaVA-NeXT (AnyRes) -------------------------------------------------------------------

PINPOINTS = [[48, 96], [96, 48], [96, 96]]  # (height, width) canvases: 1x2, 2x1, 2x2 crops


@pytest.fixture(scope="session")
def llava_next(tmp_path_factory: pytest.TempPathFactory):
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    config = LlavaNextConfig(**tiny_llava_parts(512), image_grid_pinpoints=PINPOINTS)
    folder = tmp_path_factory.mktemp("tiny-llava-next")
    return save_and_load(LlavaNextForConditionalGeneration, config, folder)


def next_pixels(*images):
    """The LLaVA-NeXT image processor, built here: base image + crops, and ``image_sizes``."""
    from PIL import Image
    from transformers import LlavaNextImageProcessorPil

    processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48},
        image_grid_pinpoints=PINPOINTS,
    )  # fmt: skip
    return dict(processor(images=[Image.fromarray(a) for a in images], return_tensors="pt"))


def noise(height: int, width: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()


def next_placeholders(model, pixels: dict[str, Any]) -> list[int]:
    """Placeholders per image, as the model packs them (base + unpadded crops + newlines)."""
    with torch.no_grad():
        features = model.model.get_image_features(
            pixel_values=pixels["pixel_values"], image_sizes=pixels["image_sizes"]
        ).pooler_output
    return [int(f.shape[0]) for f in features]


def next_inputs(model) -> dict[str, Any]:
    # Row 0: a wide image (60x100: 2x2 crops, unpadded to 8 of 12 rows); row 1: a tall image
    # (90x40: 2x1 crops) between text; left padded. pixel_values is [2, 5, 3, 48, 48].
    pixels = next_pixels(noise(60, 100, seed=4), noise(90, 40, seed=5))
    wide, tall = next_placeholders(model, pixels)
    ids, mask = left_pad([[1, 5, *[LLAVA_IMAGE] * wide, 6, 7], [1, 9, *[LLAVA_IMAGE] * tall, 10]])
    return {"input_ids": ids, "attention_mask": mask, **pixels}


@pytest.mark.parametrize(
    ("method", "budget"),
    [("divprune", "thumbnail"), ("divprune", "correlation"), ("vtc_cls", "uniform"),
     ("tome", "thumbnail"), ("globalcom2", "thumbnail")],
)  # fmt: skip
def test_llava_next_keeping_every_token_is_bit_identical(llava_next, method, budget) -> None:
    inputs = next_inputs(llava_next)
    pruned = prune_vlm_inputs(llava_next, inputs, keep=1.0, method=method, budget=budget)
    assert pruned.tokens_before == pruned.tokens_after == 140 + 120
    assert torch.equal(pruned.inputs["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        assert torch.equal(llava_next(**inputs).logits, llava_next(**pruned.inputs).logits)
    assert torch.equal(greedy(llava_next, pruned.inputs), greedy(llava_next, inputs))


@pytest.mark.parametrize("method", ["divprune", "vtc_cls", "tome", "globalcom2"])
@pytest.mark.parametrize("budget", ["thumbnail", "correlation", "uniform"])
def test_llava_next_generates_with_k_tokens(llava_next, method, budget) -> None:
    inputs = next_inputs(llava_next)
    pruned = prune_vlm_inputs(llava_next, inputs, keep=20, method=method, budget=budget)
    # 20 feature tokens per image over its base and crops; newlines ride on kept rows.
    assert [sum(b) for b in pruned.budgets] == [20, 20]
    assert [len(b) for b in pruned.budgets] == [5, 3]  # base + 2x2 crops, base + 2x1 crops
    newlines = [len(k) - 20 for k in pruned.keep_indices]
    assert all(1 <= n <= rows for n, rows in zip(newlines, [8, 12], strict=True))
    assert all(bool((k.diff() > 0).all()) for k in pruned.keep_indices)
    ids = pruned.inputs["input_ids"]
    assert (ids == LLAVA_IMAGE).sum(dim=1).tolist() == [len(k) for k in pruned.keep_indices]
    assert ids[1, -2:].tolist() == [LLAVA_IMAGE, 10] and ids[0, -2:].tolist() == [6, 7]
    assert "pixel_values" not in pruned.inputs and "image_sizes" not in pruned.inputs
    out = greedy(llava_next, pruned.inputs, steps=4)
    assert out.shape == (2, 4)


def test_llava_next_generate_pruned_returns_the_new_tokens(llava_next) -> None:
    inputs = next_inputs(llava_next)
    new = generate_pruned(
        llava_next, inputs, keep=0.1, budget="correlation", max_new_tokens=3, do_sample=False
    )
    pruned = prune_vlm_inputs(llava_next, inputs, keep=0.1, budget="correlation")
    assert torch.equal(new, greedy(llava_next, pruned.inputs, steps=3))


def test_llava_next_kept_features_are_the_models_own(llava_next) -> None:
    # The features sent for each kept slot are the model's packed features at that slot, and a
    # newline is kept exactly where its row of the crop grid keeps a token.
    inputs = next_inputs(llava_next)
    pruned = prune_vlm_inputs(llava_next, inputs, keep=0.1)
    with torch.no_grad():
        packed = llava_next.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"]
        ).pooler_output
    newline = llava_next.model.image_newline
    sent = pruned.inputs["mm_encoder_outputs"]["image"].pooler_output
    for features, kept, mine, base in zip(packed, pruned.keep_indices, sent, [36, 36], strict=True):
        assert torch.equal(mine, features[kept])
        is_newline = (features == newline).all(dim=-1)
        rows = torch.cumsum(is_newline.long(), 0) - is_newline.long()
        grid = torch.zeros_like(is_newline)
        grid[base:] = True
        kept_mask = torch.zeros_like(is_newline)
        kept_mask[kept] = True
        for r in range(int(is_newline.sum())):
            in_row = grid & ~is_newline & (rows == r)
            assert bool(kept_mask[is_newline & (rows == r)].all()) == bool(kept_mask[in_row].any())


def test_llava_next_correlation_gives_a_blank_crop_fewer_tokens(llava_next) -> None:
    # 48x96: the 1x2 canvas, no padding. Left crop blank white, right crop noise.
    image = noise(48, 96, seed=6)
    image[:, :48] = 255
    pixels = next_pixels(image)
    (count,) = next_placeholders(llava_next, pixels)
    ids = torch.tensor([[1, 5, *[LLAVA_IMAGE] * count, 6]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **pixels}
    pruned = prune_vlm_inputs(llava_next, inputs, keep=0.6, budget="correlation")
    _base, blank, busy = pruned.budgets[0]
    assert blank < busy
    uniform = prune_vlm_inputs(llava_next, inputs, keep=0.6, budget="uniform")
    assert abs(uniform.budgets[0][1] - uniform.budgets[0][2]) <= 1  # largest remainder


def test_llava_next_thumbnail_budgets_follow_the_base_images_cls_logits(llava_next) -> None:
    # Recompute GlobalCom2's split from the tower's own eager attention: log(softmax) differs
    # from the pre-softmax logits by a per-head constant, which equal-sized regions cancel.
    from ragpress.compressors.visual.vlm.budgets import allocate, thumbnail_budgets

    image = noise(48, 96, seed=7)
    image[:, :48] //= 8  # a dark, low-contrast left half
    pixels = next_pixels(image)
    (count,) = next_placeholders(llava_next, pixels)
    ids = torch.tensor([[1, *[LLAVA_IMAGE] * count, 6]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **pixels}
    pruned = prune_vlm_inputs(llava_next, inputs, keep=0.3, budget="thumbnail")
    tower = llava_next.model.vision_tower
    previous = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attention = tower(pixels["pixel_values"][:, 0], output_attentions=True).attentions[-1]
    finally:
        tower.set_attn_implementation(previous)
    scores = attention[0, :, 0, 1:].log().mean(dim=0).view(6, 6)
    total = round(0.3 * 108)
    base = int(0.3 * 36)
    weights = thumbnail_budgets(scores, (1, 2), [36, 36], ratio=total / 108, tau=10.0)
    assert pruned.budgets[0] == (base, *allocate(weights, total - base, [36, 36]))


def last_layer_cls_logits(tower, pixel_values) -> torch.Tensor:
    """``[passes, 36]`` head-mean pre-softmax [CLS] logits of the tower's last layer, computed
    from its hidden states and the layer's own modules (not from the hooks under test)."""
    import math

    with torch.no_grad():
        hidden = tower(pixel_values, output_hidden_states=True).hidden_states[-2]
        layer = tower.encoder.layers[-1]
        x = layer.layer_norm1(hidden)
        passes, positions, _ = x.shape
        q = layer.self_attn.q_proj(x[:, :1]).view(passes, 1, 4, 8)
        k = layer.self_attn.k_proj(x).view(passes, positions, 4, 8)
        logits = torch.einsum("pqhd,pkhd->phk", q, k) / math.sqrt(8)
    return logits.mean(dim=1)[:, 1:]


def test_llava_next_globalcom2_scores_crop_tokens_by_their_own_and_the_base_images_view(
    llava_next,
) -> None:
    # 60x100 on the 96x96 canvas (2x2 crops of 6x6 tokens): the model drops canvas rows 0-1
    # and 10-11, so the base image's 6x6 scores stretch over the 8x12 rows left, not the 12x12.
    import torch.nn.functional as F  # noqa: N812

    pixels = next_pixels(noise(60, 100, seed=4))
    (count,) = next_placeholders(llava_next, pixels)
    ids = torch.tensor([[1, *[LLAVA_IMAGE] * count, 6]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **pixels}
    pruned = prune_vlm_inputs(llava_next, inputs, keep=0.3, method="globalcom2")
    logits = last_layer_cls_logits(llava_next.model.vision_tower, pixels["pixel_values"][0])
    base_share, *crop_shares = pruned.budgets[0]
    expected = logits[0].topk(base_share).indices.tolist()
    stretched = F.interpolate(logits[0].view(1, 1, 6, 6), size=(8, 12), mode="bilinear")[0, 0]
    for crop, share in enumerate(crop_shares):
        places = [(y, x) for y in range(2, 10) for x in range(12) if (y // 6) * 2 + x // 6 == crop]
        own = torch.stack([logits[1 + crop, (y % 6) * 6 + x % 6] for y, x in places])
        seen = torch.stack([stretched[y - 2, x] for y, x in places])
        score = F.normalize(own, dim=0) + F.normalize(seen, dim=0)
        for i in score.topk(share).indices.tolist():
            y, x = places[i]
            expected.append(36 + (y - 2) * 13 + x)  # 12 tokens and a newline per canvas row
    kept = pruned.keep_indices[0]
    is_newline = (kept >= 36) & ((kept - 36) % 13 == 12)
    assert sorted(expected) == kept[~is_newline].tolist()
    assert len(expected) == round(0.3 * (count - 8))


def test_llava_next_rejects_missing_image_sizes_and_unsupported_choices(llava_next) -> None:
    inputs = next_inputs(llava_next)
    del inputs["image_sizes"]
    with pytest.raises(RequestValidationError, match="image_sizes"):
        prune_vlm_inputs(llava_next, inputs)
    with pytest.raises(ConfigurationError, match="method='pool'"):
        prune_vlm_inputs(llava_next, next_inputs(llava_next), method="pool")
    with pytest.raises(ConfigurationError, match="budget="):
        prune_vlm_inputs(llava_next, next_inputs(llava_next), budget="even")  # type: ignore[arg-type]


def test_budget_is_only_for_models_with_crops(llava) -> None:
    with pytest.raises(ConfigurationError, match="budget='uniform'"):
        prune_vlm_inputs(llava, llava_inputs(), budget="uniform")
    with pytest.raises(ConfigurationError, match=r"method=.globalcom2.*no crops"):
        prune_vlm_inputs(llava, llava_inputs(), method="globalcom2")
