"""Train the embedded model ``toy-ioi`` (``make toy-model``).

    python -m hvp_utils.cli.train_toy [--steps 4500] [--seed 0] [--out data/toy-ioi]

Trains a ``transformers`` GPT-2 from a fixed seed on a CPU and writes ``data/toy-ioi/`` as a
standard Hugging Face checkpoint (config.json, model.safetensors, the word-level tokenizer,
training.json). The same seed, step count and thread count (one by default) give the same
weights.

The corpus is generated on the fly (:func:`hvp_utils.core.ioi_text.training_sentence`): each
text starts with 0-3 sentences (most without names), so a name's position does not say its
role; then 40% completed IOI sentences from the training templates and training names
(held-out (template, IO, S) combinations excluded; 5% of them end with S, so the answer is
likely, not certain), and 60% general text in which repetition must be tracked (15% repeated
spans, 20% three people of whom two recur, drawn from every name, held-out names too, and 25%
names re-mentioned across sentences). The model is a language model that happens to solve
IOI, not a classifier.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Int
from torch import Tensor

from hvp_utils.core.ioi_text import all_words, training_sentence
from hvp_utils.core.toy_model import (
    TOY_MODEL_DIR,
    build_model,
    build_tokenizer,
    ioi_quality,
    save_model,
)


def packed_batch(
    tokenizer, rng: random.Random, *, rows: int, width: int, s_answer_fraction: float
) -> tuple[Int[Tensor, "rows width"], Bool[Tensor, "rows width"]]:
    """``rows`` rows of ``width`` tokens: a bos, then whole training texts back to back while
    they fit (earlier texts precede later ones, as in a document), then padding; and the mask
    of real tokens. Texts are drawn and tokenized 64 at a time; those left over are dropped."""
    tokens = torch.full((rows, width), tokenizer.pad_token_id, dtype=torch.long)
    pending: list[list[int]] = []
    for row in range(rows):
        ids = [tokenizer.bos_token_id]
        while True:
            if not pending:
                texts = [
                    training_sentence(rng, max_preceding=1, s_answer_fraction=s_answer_fraction)
                    for _ in range(64)
                ]
                pending = tokenizer(texts, add_special_tokens=False)["input_ids"]
            if len(pending[0]) >= width:  # longer than any row: never fits
                pending.pop(0)
                continue
            if len(ids) + len(pending[0]) > width:
                break
            ids += pending.pop(0)
        tokens[row, : len(ids)] = torch.tensor(ids)
    return tokens, tokens != tokenizer.pad_token_id


def lm_loss(model, tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean next-token cross-entropy over real tokens."""
    logits = model(tokens).logits[:, :-1]
    targets = tokens[:, 1:]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    weights = mask[:, 1:].reshape(-1).to(loss.dtype)
    return (loss * weights).sum() / weights.sum()


def learning_rate(step: int, *, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10% of ``peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    *,
    steps: int = 4500,
    batch_size: int = 32,
    width: int = 48,
    s_answer_fraction: float = 0.05,
    lr: float = 1e-3,
    seed: int = 0,
    out_dir: Path = TOY_MODEL_DIR,
    threads: int = 1,
    log_every: int = 500,
) -> dict:
    """Train toy-ioi from ``seed`` and save it under ``out_dir``; returns the training record."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(all_words(), Path(tmp))
    model = build_model(tokenizer, seed=seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps=steps, peak=lr, warmup=200)
        tokens, mask = packed_batch(
            tokenizer, rng, rows=batch_size, width=width, s_answer_fraction=s_answer_fraction
        )
        loss = lm_loss(model, tokens, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            quality = ioi_quality(model.eval(), tokenizer)
            model.train()
            print(
                f"step {step + 1:5d}  loss {loss.item():.3f}  held-out IOI acc "
                f"{quality['accuracy']:.3f}  logit diff {quality['logit_diff']:.2f}  "
                f"after a sentence "
                f"{quality['accuracy_after_a_sentence']:.3f}  held-out names "
                f"{quality['accuracy_heldout_names']:.3f}  "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    model.eval()
    record = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "width": width,
        "s_answer_fraction": s_answer_fraction,
        "lr": lr,
        "threads": threads,
        "train_seconds": round(time.perf_counter() - start, 1),
        "final_loss": round(loss.item(), 4),
        **{k: round(v, 4) for k, v in ioi_quality(model, tokenizer).items()},
    }
    save_model(model, tokenizer, out_dir, record)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=TOY_MODEL_DIR)
    args = parser.parse_args()
    record = train(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, out_dir=args.out
    )
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
