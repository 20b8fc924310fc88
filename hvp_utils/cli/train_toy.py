"""Train the embedded model ``toy-ioi`` (``make toy-model``).

    python -m hvp_utils.cli.train_toy [--steps 5000] [--seed 0] [--out data/toy-ioi]

Trains a ``transformers`` GPT-2 from a fixed seed on a CPU and writes ``data/toy-ioi/`` as a
standard Hugging Face checkpoint (config.json, model.safetensors, the word-level tokenizer,
training.json). The same seed, step count and thread count give the same weights.

The corpus is generated on the fly: 70% completed IOI sentences from the training templates
(held-out (template, IO, S) combinations excluded), 30% other sentences over the same words,
so the model is a language model that happens to solve IOI, not a classifier.
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
from torch import Tensor

from hvp_utils.core.ioi_text import all_words, training_sentence
from hvp_utils.core.toy_model import (
    TOY_MODEL_DIR,
    build_model,
    build_tokenizer,
    encode_batch,
    ioi_quality,
    save_model,
)


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
    steps: int = 5000,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    out_dir: Path = TOY_MODEL_DIR,
    threads: int = 2,
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
        tokens, mask = encode_batch(tokenizer, [training_sentence(rng) for _ in range(batch_size)])
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
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    model.eval()
    record = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
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
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
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
