"""Shared fixtures: the embedded model and a tiny random-initialised model, in float64."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import hvp_utils
from hvp_utils.core.toy_model import TOY_MODEL_DIR, load_tokenizer


@pytest.fixture(scope="session")
def toy64():
    return hvp_utils.load_model("toy-ioi", dtype="float64")


@pytest.fixture(scope="session")
def toy32():
    return hvp_utils.load_model("toy-ioi")


def tiny_model(dtype=torch.float64, seed: int = 1, **overrides) -> HookedTransformer:
    """A random-initialised 2-layer model with the toy tokenizer (so IOI prompts tokenize)."""
    tokenizer = load_tokenizer(TOY_MODEL_DIR / "tokenizer")
    settings = dict(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        n_ctx=32,
        act_fn="gelu",
        normalization_type="LN",
        d_vocab=len(tokenizer),
        seed=seed,
        dtype=dtype,
    )
    settings.update(overrides)
    model = HookedTransformer(
        HookedTransformerConfig(**settings), tokenizer=tokenizer, move_to_device=False
    )
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny64():
    return tiny_model()


@pytest.fixture(scope="session")
def toy_task(toy64):
    return hvp_utils.ioi_dataset(toy64, n_prompts=8, perturbation="name_swap", seed=0)


@pytest.fixture(scope="session")
def tiny_task(tiny64):
    return hvp_utils.ioi_dataset(tiny64, n_prompts=6, perturbation="random_token", seed=3)
