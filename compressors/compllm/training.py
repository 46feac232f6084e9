"""Training CompLLM by self-distillation (``ragpress train-soft``).

The teacher is the frozen LLM reading the full context as tokens; the student is the same frozen
LLM reading the concept embeddings instead. Both see the same instruction, question and answer
tokens, and the loss asks the student to reproduce the teacher's hidden states, at every layer,
on the positions that produce the answer: per layer a Smooth-L1 distance between the two, both
divided by the teacher's RMS on those positions (so deep layers, whose activations are large,
do not drown out shallow ones). Only the LoRA adapter and the projection learn.

Runs are resumable: every ``save_every`` steps a checkpoint folder holds the adapter, the
optimizer, scheduler and RNG states and the step, and the data order is a pure function of the
seed and the step, so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragpress.exceptions import ConfigurationError, MissingDependencyError, RequestValidationError

try:
    import torch
    import torch.nn.functional as F  # noqa: N812 - the conventional name
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "torch", extra="compllm") from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ragpress.compressors.compllm.compressor import CompLLMCompressor
    from ragpress.types import Passage

__all__ = [
    "CHECKPOINTS_DIR",
    "LOG_FILE",
    "StepReport",
    "TrainingExample",
    "TrainingOptions",
    "TrainingSummary",
    "distillation_loss",
    "latest_checkpoint",
    "train",
]

CHECKPOINTS_DIR = "checkpoints"
LOG_FILE = "train_log.jsonl"
_STATE_FILE = "trainer_state.json"
_OPTIMIZER_FILE = "optimizer.pt"
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """One QA record: the question, its documents, and the answer to distil on."""

    question: str
    passages: tuple[Passage, ...]
    answer: str | None = None
    """Gold answer text; ``None`` when the teacher's own greedy answer is used."""


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    """How long and how fast to train, and where the answers come from."""

    steps: int = 1000
    """Optimizer steps."""
    learning_rate: float = 1e-4
    grad_accum: int = 8
    """Examples per optimizer step."""
    warmup_steps: int = 50
    max_context_tokens: int = 1024
    """Context tokens per example (documents are cut at a segment boundary beyond this)."""
    max_answer_tokens: int = 32
    answers: Literal["gold", "self"] = "gold"
    """``gold``: the record's first answer; ``self``: the teacher's greedy answer."""
    save_every: int = 200
    """Steps between checkpoints."""
    keep_checkpoints: int = 2
    precision: Precision = "auto"
    """``auto`` is bf16 autocast on a GPU that supports it, fp32 elsewhere."""
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        counts = ("steps", "grad_accum", "save_every", "max_context_tokens", "max_answer_tokens")
        for name in counts:
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name}={getattr(self, name)} must be >= 1")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigurationError(f"learning_rate={self.learning_rate} must be > 0")


@dataclass(frozen=True, slots=True)
class StepReport:
    """Progress after one optimizer step."""

    step: int
    total_steps: int
    loss: float
    learning_rate: float
    seconds: float


@dataclass(frozen=True, slots=True)
class TrainingSummary:
    """The outcome of :func:`train`."""

    first_step: int
    """Step the run started from (0, or the resumed checkpoint's)."""
    last_step: int
    losses: tuple[float, ...]
    """Loss of every step this run made."""
    output: Path
    """The final adapter folder."""


def distillation_loss(
    teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], *, beta: float = 1.0
) -> torch.Tensor:
    """Mean over layers of Smooth-L1(student, teacher), each scaled by the teacher's RMS.

    Args:
        teacher: Per-layer hidden states at the answer positions, ``(n, d)`` each.
        student: The student's, same shapes.
        beta: Smooth-L1 threshold between the quadratic and linear regimes (in teacher RMS).
    """
    losses = []
    for t, s in zip(teacher, student, strict=True):
        t32, s32 = t.float(), s.float()
        scale = t32.pow(2).mean().sqrt().clamp_min(1e-6)
        losses.append(F.smooth_l1_loss(s32 / scale, t32 / scale, beta=beta))
    return torch.stack(losses).mean()


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder under ``out_dir``, if any."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    done = [p for p in root.glob("step-*") if (p / _STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def train(
    compressor: CompLLMCompressor,
    examples: Sequence[TrainingExample],
    out_dir: str | Path,
    options: TrainingOptions | None = None,
    *,
    resume_from: Path | None = None,
    on_step: Callable[[StepReport], None] | None = None,
) -> TrainingSummary:
    """Distil ``compressor`` on ``examples``; write checkpoints and the final adapter.

    Args:
        compressor: The compressor to train (loaded from ``resume_from`` when resuming).
        examples: QA records; visited in a seeded order, several epochs if needed.
        out_dir: Receives ``checkpoints/step-N/``, ``train_log.jsonl`` and the final adapter.
        options: Schedule and data settings.
        resume_from: A checkpoint folder to continue from (its weights must already be in
            ``compressor``; its optimizer state and step are restored here).
        on_step: Called after every optimizer step (progress display).

    Raises:
        RequestValidationError: No examples, or an example without the answer ``gold`` needs.
    """
    options = options or TrainingOptions()
    if not examples:
        raise RequestValidationError("no training examples; give a JSONL file of QA records")
    if options.answers == "gold":
        for i, example in enumerate(examples):
            if not (example.answer and example.answer.strip()):
                raise RequestValidationError(
                    f"example {i} has no answer; add 'answers' to the record or train with "
                    "answers='self' (the model's own answers)",
                    param=f"examples[{i}].answers",
                )
    run = _Run(compressor, examples, Path(out_dir), options)
    if resume_from is not None:
        run.restore(resume_from)
    return run.loop(on_step)


class _Run:
    def __init__(
        self,
        compressor: CompLLMCompressor,
        examples: Sequence[TrainingExample],
        out_dir: Path,
        options: TrainingOptions,
    ) -> None:
        self.compressor = compressor
        self.encoder = compressor.encoder
        self.examples = examples
        self.out_dir = out_dir
        self.options = options
        self.step = 0
        self.encoder.set_trainable(True)
        self.parameters = self.encoder.trainable_parameters()
        self.optimizer = torch.optim.AdamW(self.parameters, lr=options.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.autocast_dtype = _autocast_dtype(options.precision, self.encoder.device)
        self.scaler = torch.amp.GradScaler(
            self.encoder.device.type, enabled=self.autocast_dtype == torch.float16
        )
        self._self_answers: dict[int, tuple[int, ...]] = {}

    def _lr_factor(self, step: int) -> float:
        warmup = self.options.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, self.options.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def _autocast(self) -> AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.encoder.device.type, dtype=self.autocast_dtype)

    # -- data ----------------------------------------------------------------------------------

    def example_at(self, micro_step: int) -> int:
        """Index of the example for a micro-step: a seeded permutation per epoch."""
        n = len(self.examples)
        epoch, position = divmod(micro_step, n)
        generator = torch.Generator().manual_seed(self.options.seed * 100_003 + epoch)
        return int(torch.randperm(n, generator=generator)[position])

    def _context(self, passages: Sequence[Passage]) -> list[tuple[int, ...]]:
        segments: list[tuple[int, ...]] = []
        total = 0
        for passage in passages:
            for segment in self.compressor.segments(passage):
                if total >= self.options.max_context_tokens:
                    return segments
                segments.append(segment.ids)
                total += len(segment.ids)
        return segments

    def _answer(self, index: int, prompt_ids: list[int]) -> tuple[int, ...]:
        example = self.examples[index]
        tokenizer = self.encoder.tokenizer
        eos = self.encoder.config.concept_token_id
        if self.options.answers == "gold":
            assert example.answer is not None
            ids = tokenizer(example.answer.strip(), add_special_tokens=False)["input_ids"]
            return (*ids[: self.options.max_answer_tokens], eos)
        if index not in self._self_answers:
            with torch.inference_mode(), self.encoder.frozen() as llm:
                generate: Any = llm.generate
                out = generate(
                    input_ids=torch.tensor([prompt_ids], device=self.encoder.device),
                    max_new_tokens=self.options.max_answer_tokens,
                    do_sample=False,
                    pad_token_id=eos,
                )
            generated = [int(t) for t in out[0, len(prompt_ids) :]]
            if eos in generated:
                generated = generated[: generated.index(eos)]
            self._self_answers[index] = (*generated, eos)
        return self._self_answers[index]

    # -- one example ---------------------------------------------------------------------------

    def loss_of(self, index: int) -> torch.Tensor:
        """Distillation loss of one example (autograd graph attached)."""
        example = self.examples[index]
        segments = self._context(example.passages)
        parts = self.compressor.prompt_parts(example.question)
        context_ids = [i for s in segments for i in s]
        prompt_ids = parts.around(context_ids)
        answer = self._answer(index, prompt_ids)
        device = self.encoder.device
        teacher_ids = torch.tensor([[*prompt_ids, *answer]], device=device)
        teacher_at = torch.arange(len(answer), device=device) + len(prompt_ids) - 1
        with torch.no_grad(), self._autocast(), self.encoder.frozen() as llm:
            out = llm(input_ids=teacher_ids, output_hidden_states=True, logits_to_keep=1)
            teacher = [h[0, teacher_at] for h in out.hidden_states[1:]]
        with self._autocast():
            batch = self.compressor.batch_size
            concepts = self.encoder.encode_with_grad(segments, batch_size=batch)
            pieces = [
                self.encoder.embed_ids(parts.prefix),
                *concepts,
                self.encoder.embed_ids(parts.suffix),
                self.encoder.embed_ids(answer),
            ]
            student_embeds = torch.cat([p.to(self.encoder.dtype) for p in pieces])[None]
            answer_start = student_embeds.shape[1] - len(answer)
            student_at = torch.arange(len(answer), device=device) + answer_start - 1
            with self.encoder.frozen() as llm:
                out = llm(inputs_embeds=student_embeds, output_hidden_states=True, logits_to_keep=1)
            student = [h[0, student_at] for h in out.hidden_states[1:]]
        return distillation_loss(teacher, student)

    # -- loop ----------------------------------------------------------------------------------

    def loop(self, on_step: Callable[[StepReport], None] | None) -> TrainingSummary:
        first = self.step
        losses: list[float] = []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = (self.out_dir / LOG_FILE).open("a", encoding="utf-8")
        try:
            while self.step < self.options.steps:
                started = time.perf_counter()
                total = 0.0
                for k in range(self.options.grad_accum):
                    index = self.example_at(self.step * self.options.grad_accum + k)
                    loss = self.loss_of(index) / self.options.grad_accum
                    scaled: Any = self.scaler.scale(loss)
                    scaled.backward()
                    total += float(loss.detach())
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.parameters, self.options.max_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                lr = float(self.scheduler.get_last_lr()[0])
                self.scheduler.step()
                self.step += 1
                losses.append(total)
                report = StepReport(
                    self.step, self.options.steps, total, lr, time.perf_counter() - started
                )
                log.write(json.dumps(asdict(report)) + "\n")
                log.flush()
                if on_step is not None:
                    on_step(report)
                if self.step % self.options.save_every == 0 or self.step == self.options.steps:
                    self.checkpoint()
        finally:
            log.close()
        self.encoder.set_trainable(False)
        self.compressor.refresh_fingerprint()
        self.compressor.save(self.out_dir)
        return TrainingSummary(first, self.step, tuple(losses), self.out_dir)

    def checkpoint(self) -> Path:
        """Write ``checkpoints/step-N`` (adapter, optimizer, state) and prune old ones."""
        folder = self.out_dir / CHECKPOINTS_DIR / f"step-{self.step:07d}"
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        self.compressor.save(partial)
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": torch.get_rng_state(),
            },
            partial / _OPTIMIZER_FILE,
        )
        state = {"step": self.step, "options": asdict(self.options)}
        (partial / _STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)  # a checkpoint is complete or absent, never half-written
        done = sorted(
            (p for p in folder.parent.glob("step-*") if not p.name.endswith(".partial")),
            key=lambda p: int(p.name.split("-")[1]),
        )
        for old in done[: -self.options.keep_checkpoints]:
            shutil.rmtree(old)
        return folder

    def restore(self, folder: Path) -> None:
        """Continue from a checkpoint: weights, optimizer, scheduler, RNG and step."""
        state = json.loads((folder / _STATE_FILE).read_text())
        self.step = int(state["step"])
        self._truncate_log()
        self.encoder.load_weights(folder)
        saved = torch.load(folder / _OPTIMIZER_FILE, weights_only=True, map_location="cpu")
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"])

    def _truncate_log(self) -> None:
        """Drop log lines of steps after the checkpoint (the interrupted run's last steps)."""
        log = self.out_dir / LOG_FILE
        if not log.is_file():
            return
        kept = [
            line
            for line in log.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= self.step
        ]
        log.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def _autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if device.type != "cuda":
        raise ConfigurationError(
            f"precision={precision!r} needs a CUDA device, not {device.type}; use fp32 or auto"
        )
    return torch.bfloat16 if precision == "bf16" else torch.float16
