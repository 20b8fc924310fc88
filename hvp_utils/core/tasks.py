"""Patching tasks: clean and corrupted token batches, answers and the metric.

A :class:`PatchingTask` is what every estimator consumes. For IOI (:func:`ioi_dataset`) the
metric is the logit difference at the final position, averaged over prompt pairs:

    m(logits) = mean_b [ logits[b, -1, IO_b] - logits[b, -1, S_b] ]

Perturbations (both seeded, both keep clean and corrupted positions aligned):

- ``name_swap``: IOI's ABC corruption; the three name mentions (IO, S, S) become three
  distinct other names, so the corrupted prompt holds no repeated name to exploit.
- ``random_token``: every name token becomes a uniformly random vocabulary token.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from hvp_utils.core.ioi_text import IOIPrompt, every_name, sample_heldout_prompts
from hvp_utils.core.readout import run_with_answer_logits
from hvp_utils.core.types import PERTURBATIONS, Model, Perturbation

#: Below this clean accuracy (share of prompts whose correct answer wins) a model is said
#: not to perform the task: its patching effects would be read off noise.
MIN_CLEAN_ACCURACY = 0.6
#: Below this clean-minus-corrupted metric gap (logits) likewise.
MIN_METRIC_GAP = 1.0
#: Words of the held-out IOI templates; every default prompt has this many words.
DEFAULT_PROMPT_WORDS = 14


class TaskError(ValueError):
    """Inputs that would make a patching result meaningless (misaligned, multi-token, ...)."""


@dataclass
class PatchingTask:
    """Clean and corrupted prompts with a scalar metric averaged over prompts.

    ``answer_tokens[b] = (correct, incorrect)``; ``metric`` is the mean of
    :meth:`metric_per_prompt`. The engine never computes full logits: it reads the answer
    logits at the final position (:mod:`hvp_utils.core.readout`) and applies
    :meth:`answer_metric`. Rows are ``k`` replicates of the batch, replicate-major, which
    batched patching relies on.
    """

    clean_tokens: Int[Tensor, "batch pos"]
    # same shape as clean_tokens; __post_init__ checks it and says how to fix a mismatch
    corrupted_tokens: Int[Tensor, "batch_c pos_c"]
    answer_tokens: Int[Tensor, "batch_a two"]  # (correct, incorrect) per prompt
    clean_prompts: list[str] = field(default_factory=list)
    corrupted_prompts: list[str] = field(default_factory=list)
    perturbation: str = "custom"
    position_labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_aligned(self.clean_tokens, self.corrupted_tokens)
        if self.answer_tokens.shape != (self.clean_tokens.shape[0], 2):
            raise TaskError(
                f"answer_tokens has shape {tuple(self.answer_tokens.shape)}; expected "
                f"({self.clean_tokens.shape[0]}, 2): one (correct, incorrect) pair per prompt"
            )

    @property
    def n_prompts(self) -> int:
        return self.clean_tokens.shape[0]

    @property
    def n_positions(self) -> int:
        return self.clean_tokens.shape[1]

    def answer_metric(self, answer_logits: Float[Tensor, "rows two"]) -> Float[Tensor, "rows"]:  # noqa: F821
        """The per-prompt metric from the answer logits at the final position:
        ``logit(correct) - logit(incorrect)``. Subclasses change the metric here."""
        return answer_logits[:, 0] - answer_logits[:, 1]

    def answers_for(self, rows: int) -> Int[Tensor, "rows two"]:
        """The (correct, incorrect) ids for ``rows`` rows: ``k`` replicates of the batch,
        replicate-major, as batched patching stacks them."""
        reps = rows // self.n_prompts
        if reps * self.n_prompts != rows:
            raise TaskError(f"{rows} rows are not a multiple of {self.n_prompts} prompts")
        return self.answer_tokens.repeat(reps, 1)

    def metric_per_prompt(self, logits: Float[Tensor, "rows pos vocab"]) -> Float[Tensor, "rows"]:  # noqa: F821
        """:meth:`answer_metric` from full logits (final position), one value per row."""
        final = logits[:, -1, :]
        answers = self.answers_for(final.shape[0]).to(final.device)
        return self.answer_metric(final.gather(1, answers))

    def metric(self, logits: Float[Tensor, "batch pos vocab"]) -> Float[Tensor, ""]:
        """The task metric from full logits: mean over prompts of :meth:`metric_per_prompt`."""
        return check_finite(self.metric_per_prompt(logits).mean(), "metric")

    def to(self, device: str | torch.device) -> PatchingTask:
        """The same task with its tensors on ``device``."""
        self.clean_tokens = self.clean_tokens.to(device)
        self.corrupted_tokens = self.corrupted_tokens.to(device)
        self.answer_tokens = self.answer_tokens.to(device)
        return self


def check_aligned(clean: Tensor, corrupted: Tensor) -> None:
    """Clean and corrupted batches must have the same shape, position by position."""
    if clean.shape != corrupted.shape:
        raise TaskError(
            f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corrupted.shape)} "
            "differ in shape: patching needs aligned positions. Use corruptions that keep the "
            "token count (single-token replacement names), or pad both sides identically."
        )


def check_finite(value: Tensor, what: str) -> Tensor:
    """Raise on NaN/inf instead of returning a silently wrong number."""
    if not torch.isfinite(value).all():
        raise FloatingPointError(
            f"{what} is not finite ({value.flatten()[:4].tolist()}...). Check the answer "
            "tokens and the metric, and use dtype='float32' or 'float64' (float16 overflows)."
        )
    return value


def single_token_id(model: Model, name: str) -> int | None:
    """Token id of ``" " + name`` when the model's tokenizer knows it as one token."""
    tokens = model.to_tokens(" " + name, prepend_bos=False)[0]
    if len(tokens) != 1:
        return None
    token = int(tokens[0])
    unknown = getattr(model.tokenizer, "unk_token_id", None)
    return None if token == unknown else token


def usable_names(model: Model, *, names: list[str] | None = None) -> list[str]:
    """Names that are single tokens for ``model``.

    Default names that split into several tokens are dropped; names given explicitly must
    all be single tokens, or a :class:`TaskError` names the offenders.
    """
    if names is not None:
        bad = [n for n in names if single_token_id(model, n) is None]
        if bad:
            raise TaskError(
                f"names {bad} are not single tokens for this model's tokenizer (or are "
                "unknown to it); IOI's logit difference needs one-token names. Drop them or "
                "pass names=None to use the built-in list filtered for this tokenizer."
            )
        kept = list(names)
    else:
        kept = [n for n in every_name() if single_token_id(model, n) is not None]
    if len(kept) < 5:
        raise TaskError(
            f"only {len(kept)} single-token names for this tokenizer; the ABC corruption needs "
            "at least 5. Pass names=[...] with more single-token names."
        )
    return kept


def corrupt_names(prompt: IOIPrompt, rng: random.Random, names: list[str]) -> str:
    """ABC corruption: IO, S and the repeated S become three distinct names, all new."""
    others = [n for n in names if n not in (prompt.io, prompt.s)]
    a, b, c = rng.sample(others, 3)
    return prompt.fill(io=a, s=b, s2=c)


def random_token_ids(model: Model, rng: random.Random, k: int) -> list[int]:
    """``k`` uniformly random non-special vocabulary token ids."""
    special = set(getattr(model.tokenizer, "all_special_ids", []) or [])
    ids = []
    while len(ids) < k:
        token = rng.randrange(model.cfg.d_vocab)
        if token not in special and token < len(model.tokenizer):
            ids.append(token)
    return ids


def ioi_dataset(
    model: Model,
    *,
    n_prompts: int = 32,
    perturbation: Perturbation = "name_swap",
    seed: int = 0,
    names: list[str] | None = None,
) -> PatchingTask:
    """IOI prompt pairs from the held-out split, with the requested perturbation.

    Prompts share one length and one name layout (the positions of the three name
    mentions), so per-position components mean the same thing in every prompt.
    """
    if perturbation not in PERTURBATIONS:
        raise TaskError(f"unknown perturbation {perturbation!r}; use one of {PERTURBATIONS}")
    if n_prompts < 1:
        raise TaskError("n_prompts must be at least 1")
    names = usable_names(model, names=names)
    rng = random.Random(seed)
    candidates = sample_heldout_prompts(
        rng, 6 * n_prompts + 24, names, n_words=DEFAULT_PROMPT_WORDS
    )
    pairs = [(p, corrupt_names(p, rng, names)) for p in candidates]
    clean, abc, kept = _aligned_group(model, pairs, n_prompts)
    if perturbation == "name_swap":
        corrupted = abc
    else:
        corrupted = clean.clone()
        name_slots = clean != abc
        corrupted[name_slots] = torch.tensor(random_token_ids(model, rng, int(name_slots.sum())))
    answers = torch.tensor(
        [[single_token_id(model, p.io), single_token_id(model, p.s)] for p in kept]
    )
    return PatchingTask(
        clean_tokens=clean,
        corrupted_tokens=corrupted,
        answer_tokens=answers,
        clean_prompts=[p.text for p in kept],
        corrupted_prompts=[model.to_string(row[1:]) for row in corrupted],
        perturbation=perturbation,
        position_labels=_position_labels(model, clean, clean != abc),
    ).to(model.cfg.device)


def _aligned_group(
    model: Model, pairs: list[tuple[IOIPrompt, str]], n: int
) -> tuple[Tensor, Tensor, list[IOIPrompt]]:
    """The first ``n`` pairs of the most common (length, name layout) group."""
    rows = []
    for prompt, corrupted_text in pairs:
        clean = model.to_tokens(prompt.text)[0]
        corrupted = model.to_tokens(corrupted_text)[0]
        if clean.shape == corrupted.shape:
            layout = tuple((clean != corrupted).nonzero().flatten().tolist())
            rows.append(((len(clean), layout), clean, corrupted, prompt))
    if not rows:
        raise TaskError("no IOI prompt keeps the same token count after corruption")
    group, count = Counter(r[0] for r in rows).most_common(1)[0]
    if count < n:
        raise TaskError(
            f"only {count} aligned prompts of one layout for this tokenizer; ask for "
            f"n_prompts <= {count} or pass single-token names."
        )
    chosen = [r for r in rows if r[0] == group][:n]
    clean = torch.stack([r[1] for r in chosen])
    corrupted = torch.stack([r[2] for r in chosen])
    return clean.cpu(), corrupted.cpu(), [r[3] for r in chosen]


def _position_labels(model: Model, clean: Tensor, name_slots: Tensor) -> list[str]:
    """``"S2"``-style labels for name slots, the shared word elsewhere, ``"end"`` last."""
    slot_positions = name_slots[0].nonzero().flatten().tolist()
    slot_names = dict(zip(slot_positions, ["N1", "N2", "S2"][: len(slot_positions)], strict=False))
    labels = []
    for pos in range(clean.shape[1]):
        if pos in slot_names:
            labels.append(slot_names[pos])
        elif (clean[:, pos] == clean[0, pos]).all():
            labels.append(model.to_single_str_token(int(clean[0, pos])).strip())
        else:
            labels.append(f"pos{pos}")
    labels[-1] = "end"
    return labels


def metric_per_prompt(model: Model, task: PatchingTask, tokens: Tensor) -> Tensor:
    """The per-prompt metric on ``tokens`` from the answer logits only (no full unembedding)."""
    answers = task.answers_for(tokens.shape[0])
    logits, _ = run_with_answer_logits(model, tokens, answers)
    return task.answer_metric(logits)


@torch.no_grad()
def task_baseline(model: Model, task: PatchingTask) -> dict:
    """Metric on clean and corrupted inputs, and the clean accuracy (correct logit wins)."""
    clean = metric_per_prompt(model, task, task.clean_tokens)
    corrupted = metric_per_prompt(model, task, task.corrupted_tokens)
    return {
        "perturbation": task.perturbation,
        "n_prompts": task.n_prompts,
        "clean_metric": clean.mean().item(),
        "corrupted_metric": corrupted.mean().item(),
        "clean_accuracy": (clean > 0).double().mean().item(),
        "corrupted_accuracy": (corrupted > 0).double().mean().item(),
    }


class TaskPerformanceWarning(UserWarning):
    """The model does not perform the task well enough for its circuits to mean anything."""


def task_report(model: Model, tasks: PatchingTask | dict[str, PatchingTask]) -> pd.DataFrame:
    """How well the model performs each task, with a plain warning when it does not.

    Args:
        model: the model.
        tasks: one task, or ``{label: task}``.

    Returns:
        One row per task (indexed by perturbation): ``n_prompts``, ``clean_accuracy``,
        ``clean_metric``, ``corrupted_metric``, ``gap = clean_metric - corrupted_metric`` and
        ``performs_task`` (``clean_accuracy >= MIN_CLEAN_ACCURACY`` and
        ``gap >= MIN_METRIC_GAP``). A :class:`TaskPerformanceWarning` names every task the
        model fails, so that nobody reads noise as a circuit.
    """
    tasks = {"task": tasks} if isinstance(tasks, PatchingTask) else tasks
    rows = []
    for task in tasks.values():
        base = task_baseline(model, task)
        gap = base["clean_metric"] - base["corrupted_metric"]
        rows.append(
            {
                "perturbation": task.perturbation,
                "n_prompts": task.n_prompts,
                "clean_accuracy": base["clean_accuracy"],
                "clean_metric": base["clean_metric"],
                "corrupted_metric": base["corrupted_metric"],
                "gap": gap,
                "performs_task": base["clean_accuracy"] >= MIN_CLEAN_ACCURACY
                and gap >= MIN_METRIC_GAP,
            }
        )
    frame = pd.DataFrame(rows).set_index("perturbation")
    failing = frame[~frame.performs_task]
    if len(failing):
        details = "; ".join(
            f"{p}: clean accuracy {r.clean_accuracy:.0%}, gap {r.gap:.2f} logits"
            for p, r in failing.iterrows()
        )
        warnings.warn(
            f"this model does not perform the task ({details}; needed: clean accuracy >= "
            f"{MIN_CLEAN_ACCURACY:.0%} and a clean-corrupted gap >= {MIN_METRIC_GAP:g} logit). "
            "Its patching effects and circuits below describe noise, not a mechanism.",
            TaskPerformanceWarning,
            stacklevel=2,
        )
    return frame
