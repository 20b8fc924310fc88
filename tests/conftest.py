"""Shared fixtures: the embedded model and a tiny random-initialised model, in float64."""

from __future__ import annotations

import pytest
import torch

import hvp_utils
from hvp_utils.core.toy_model import TOY_MODEL_DIR, load_tokenizer


@pytest.fixture(scope="session")
def toy64():
    return hvp_utils.load_model("toy-ioi", dtype="float64")


@pytest.fixture(scope="session")
def toy32():
    return hvp_utils.load_model("toy-ioi")


#: Tiny random-initialised Hugging Face models of each architecture family (2 layers,
#: d_model 32, 4 heads of 8, d_mlp 64); ``transformers`` builds them, TransformerLens bridges them.
TINY_FAMILIES = {
    "gpt2": (
        "GPT2LMHeadModel",
        "GPT2Config",
        dict(
            n_layer=2,
            n_embd=32,
            n_head=4,
            n_inner=64,
            n_positions=32,
            activation_function="gelu",
            tie_word_embeddings=False,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        ),
    ),
    "llama": (
        "LlamaForCausalLM",
        "LlamaConfig",
        dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
            tie_word_embeddings=False,
        ),
    ),
    "gemma2": (
        "Gemma2ForCausalLM",
        "Gemma2Config",
        dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            intermediate_size=64,
            max_position_embeddings=32,
            sliding_window=16,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        ),
    ),
    "neox": (
        "GPTNeoXForCausalLM",
        "GPTNeoXConfig",
        dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=32,
            rotary_pct=0.5,
            use_parallel_residual=True,
        ),
    ),
}


#: Weight scale of the tiny models: at Hugging Face's 0.02 a 32-wide model attends almost
#: uniformly and query/key effects vanish (1e-6), which would make their tests vacuous.
INIT_STD = 0.25


def tiny_hf_model(family: str = "gpt2", seed: int = 1, **overrides):
    """A random-initialised ``transformers`` model of ``family`` with the toy tokenizer's
    vocabulary and special tokens (so IOI prompts tokenize), in eval mode."""
    import transformers

    tokenizer = load_tokenizer(TOY_MODEL_DIR)
    model_class, config_class, settings = TINY_FAMILIES[family]
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{**settings, **overrides},
    )
    config.initializer_range = INIT_STD
    torch.manual_seed(seed)
    return getattr(transformers, model_class)(config).eval(), tokenizer


def tiny_model(family: str = "gpt2", dtype=torch.float64, seed: int = 1, **overrides):
    """:func:`tiny_hf_model` as the package's model (a TransformerBridge)."""
    hf_model, tokenizer = tiny_hf_model(family, seed, **overrides)
    return hvp_utils.from_hf_model(hf_model, tokenizer, name=f"tiny-{family}", dtype=dtype)


@pytest.fixture(scope="session")
def tiny64():
    return tiny_model()


@pytest.fixture(scope="session")
def small64():
    """A random 4-layer GPT-2 (d_model 32, 8 heads of 4) with the toy tokenizer: the embedded
    model's layer count and prompts at a fraction of its cost, for the unit tier."""
    return tiny_model(n_layer=4, n_head=8)


@pytest.fixture(scope="session")
def small_task(small64):
    return hvp_utils.ioi_dataset(small64, n_prompts=8, perturbation="name_swap", seed=0)


@pytest.fixture(scope="session")
def toy_task(toy64):
    return hvp_utils.ioi_dataset(toy64, n_prompts=8, perturbation="name_swap", seed=0)


@pytest.fixture(scope="session")
def tiny_task(tiny64):
    return hvp_utils.ioi_dataset(tiny64, n_prompts=6, perturbation="random_token", seed=3)


def pytest_collection_modifyitems(items):
    """The claim tests (``tests/test_claims_NN.py``, one per notebook) read the committed
    notebooks' recorded findings: they are the course tier (``make course``), like the
    exercises; ``make claims-rerun`` runs them on the papermill reruns too."""
    for item in items:
        if item.path.name.startswith("test_claims_"):
            item.add_marker(pytest.mark.course)
