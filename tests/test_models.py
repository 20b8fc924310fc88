"""The embedded model: offline loading, IOI quality on held-out prompts, reproducible training."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections import defaultdict

import pytest
import torch

import hvp_utils
from hvp_utils.cli.train_toy import train
from hvp_utils.core.ioi_text import (
    every_name,
    filler_sentence,
    heldout_prompt_sources,
    ioi_training_sentence,
    ioi_vocab,
    is_heldout_combination,
    natural_text,
    sample_prompt,
    training_sentence,
)
from hvp_utils.core.toy_model import TOY_MODEL_DIR, encode_batch


def test_toy_model_loads_offline_in_seconds():
    start = time.perf_counter()
    model = hvp_utils.load_model("toy-ioi")
    assert time.perf_counter() - start < 10
    assert model.cfg.n_layers >= 4 and model.cfg.n_heads >= 4
    assert model.cfg.act_fn == "gelu" and model.cfg.normalization_type == "LN"


def test_dtype_and_device_are_honoured():
    model = hvp_utils.load_model("toy-ioi", dtype="float64", device="cpu")
    assert model.W_E.dtype == torch.float64 and model.cfg.dtype == torch.float64


def test_bos_is_explicit_and_the_first_word_survives(toy32):
    tokens = toy32.to_str_tokens("When Mary and John went to the store")
    assert tokens[:3] == ["<|bos|>", "When", "Mary"]


def heldout_logit_diffs(model, n_per_source: int = 40, *, names=None, preceded=False):
    """Logit difference IO - S on held-out prompts, grouped by template (and split);
    ``preceded``: a name-free sentence before each prompt."""
    rng = random.Random(99)
    names = names or every_name()
    diffs = defaultdict(list)
    for template, split in heldout_prompt_sources():
        prompts = [sample_prompt(rng, [template], names, split=split) for _ in range(n_per_source)]
        texts = [f"{filler_sentence(rng)} {p.text}" if preceded else p.text for p in prompts]
        tokens, mask = encode_batch(model.tokenizer, texts)
        with torch.no_grad():
            logits = model(tokens)[torch.arange(len(prompts)), mask.sum(1) - 1]
        io = torch.tensor([model.tokenizer.convert_tokens_to_ids(p.io) for p in prompts])
        s = torch.tensor([model.tokenizer.convert_tokens_to_ids(p.s) for p in prompts])
        rows = torch.arange(len(prompts))
        key = ("heldout template" if split == "any" else "heldout names", template)
        diffs[key] = logits[rows, io] - logits[rows, s]
    return diffs


@pytest.mark.slow
def test_toy_model_solves_ioi_on_heldout_prompts(toy32):
    diffs = heldout_logit_diffs(toy32)
    everything = torch.cat(list(diffs.values()))
    assert (everything > 0).float().mean() >= 0.9
    assert 2.0 <= everything.mean() <= 6.0  # unsaturated, like GPT-2 small's (about 3.5)
    heldout_templates = [v for (kind, _), v in diffs.items() if kind == "heldout template"]
    assert len(heldout_templates) >= 10
    # no held-out template may be solved by chance only (0.5); the weakest, whose last clause
    # follows a full stop or a long clause, reach 0.6 to 0.65
    for values in heldout_templates:
        assert (values > 0).float().mean() >= 0.6


@pytest.mark.slow
def test_toy_model_solves_ioi_with_heldout_names(toy32):
    """Names that never appear in an IOI sentence in training (only in other text)."""
    diffs = torch.cat(list(heldout_logit_diffs(toy32, names=ioi_vocab()["heldout_names"]).values()))
    assert (diffs > 0).float().mean() >= 0.9


@pytest.mark.slow
def test_toy_model_accuracy_holds_after_a_preceding_sentence(toy32):
    """A sentence before the prompt moves every name's position: no positional shortcut."""
    alone = (torch.cat(list(heldout_logit_diffs(toy32).values())) > 0).float().mean()
    preceded = torch.cat(list(heldout_logit_diffs(toy32, preceded=True).values()))
    assert (preceded > 0).float().mean() >= 0.9
    assert (preceded > 0).float().mean() >= alone - 0.03


@pytest.mark.slow
def test_heads_that_matter_span_three_layers(toy32):
    """Heads with at least 10% of the largest head |AP| lie in at least three layers, so
    attribution runs through composition (activation patching, both perturbations)."""
    heads = hvp_utils.components(toy32, "head_out")
    for perturbation in ("name_swap", "random_token"):
        task = hvp_utils.ioi_dataset(toy32, n_prompts=16, perturbation=perturbation, seed=0)
        effects = hvp_utils.activation_patching(toy32, task, heads).values.abs()
        layers = {h.layer for h, e in zip(heads, effects, strict=True) if e >= 0.1 * effects.max()}
        assert len(layers) >= 3, (perturbation, sorted(layers))


def template_regex(template: str) -> re.Pattern:
    """A template as a regex over filled sentences: each slot matches one word."""
    pattern = re.escape(natural_text(template))
    for slot in ("N1", "N2", "S", "PLACE", "OBJECT"):
        pattern = pattern.replace(re.escape("{" + slot + "}"), r"\S+")
    return re.compile(pattern)


def test_training_never_sees_the_heldout_split():
    vocab = ioi_vocab()
    assert len(vocab["train_templates"]) >= 30 and len(vocab["heldout_templates"]) >= 10
    rng = random.Random(0)
    for _ in range(2000):
        prompt = sample_prompt(rng, vocab["train_templates"], vocab["names"], split="train")
        assert not is_heldout_combination(prompt.template, prompt.io, prompt.s)
    texts = [training_sentence(random.Random(i)) for i in range(3000)]
    heldout = [template_regex(t) for t in vocab["heldout_templates"]]
    assert not any(r.search(t) for r in heldout for t in texts)
    # the regexes do recognise sentences of their own template
    assert heldout[0].search(
        sample_prompt(rng, vocab["heldout_templates"][:1], vocab["names"], split="any").text
    )
    # held-out names are words of the language, never a name of a training IOI sentence
    ioi_sentences = [
        ioi_training_sentence(random.Random(i), s_answer_fraction=0.04) for i in range(3000)
    ]
    ioi_words = {w.strip(",.") for s in ioi_sentences for w in s.split()}
    assert ioi_words & set(vocab["names"]) == set(vocab["names"])
    assert not ioi_words & set(vocab["heldout_names"])
    words = {w.strip(",.") for t in texts for w in t.split()}
    assert set(vocab["heldout_names"]) <= words
    # every word of a held-out template is trained on, in other sentences
    template_words = {
        w for t in vocab["heldout_templates"] for w in natural_text(t).split() if "{" not in w
    }
    assert {w.strip(",.") for w in template_words} - {""} <= words


def test_texts_before_the_prompt_move_the_names():
    """Training texts start with 0-3 other sentences, so a name's position varies."""
    rng = random.Random(0)
    starts = {len(training_sentence(rng).split(" . ")[0]) for _ in range(200)}
    assert len(starts) > 20


@pytest.mark.slow
def test_training_is_reproducible(tmp_path):
    first = train(steps=3, batch_size=8, seed=7, out_dir=tmp_path / "a", log_every=10**9)
    second = train(steps=3, batch_size=8, seed=7, out_dir=tmp_path / "b", log_every=10**9)
    assert first["final_loss"] == second["final_loss"]
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    b = (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a == b


def test_unknown_model_name_is_an_error():
    with pytest.raises(hvp_utils.UnknownModelError, match="unknown model 'gpt2-smal'.*gpt2-small"):
        hvp_utils.load_model("gpt2-smal")


@pytest.mark.slow
def test_missing_weights_offline_is_an_error(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path),
        "TRANSFORMERS_OFFLINE": "1",
    }
    code = (
        "import hvp_utils\n"
        "try:\n"
        "    hvp_utils.load_model('gpt2-small')\n"
        "except hvp_utils.ModelWeightsUnavailableError as e:\n"
        "    print('UNAVAILABLE', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert "UNAVAILABLE" in out.stdout, out.stderr[-2000:]
    assert "toy-ioi" in out.stdout and "HF_HUB_OFFLINE" in out.stdout


def test_toy_model_is_a_standard_hugging_face_checkpoint(toy64, toy_task):
    """transformers loads data/toy-ioi with no project code, and its logits are the bridge's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model = AutoModelForCausalLM.from_pretrained(str(TOY_MODEL_DIR), dtype=torch.float64)
    tokenizer = AutoTokenizer.from_pretrained(str(TOY_MODEL_DIR))
    assert type(hf_model).__name__ == "GPT2LMHeadModel"
    assert tokenizer.bos_token == "<|bos|>" and tokenizer.pad_token == "<|pad|>"
    with torch.no_grad():
        reference = hf_model.eval()(toy_task.clean_tokens).logits
        torch.testing.assert_close(toy64(toy_task.clean_tokens), reference, rtol=0, atol=1e-9)
    record = json.loads((TOY_MODEL_DIR / "training.json").read_text())
    assert record["accuracy"] >= 0.95 and record["logit_diff"] >= 2.0


def test_placement_is_passed_to_the_bridge(monkeypatch):
    """n_devices and device_map reach TransformerBridge.boot_transformers unchanged."""
    from hvp_utils.core import models

    seen = []

    def fake_boot(source, **kwargs):
        seen.append(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(models.TransformerBridge, "boot_transformers", fake_boot)
    for kwargs in ({"n_devices": 2}, {"device_map": "auto"}, {"device": "cpu"}):
        with pytest.raises(hvp_utils.ModelWeightsUnavailableError):
            hvp_utils.load_model("toy-ioi", **kwargs)
    assert seen[0]["n_devices"] == 2 and "device" not in seen[0]
    assert seen[1]["device_map"] == "auto" and "n_devices" not in seen[1]
    assert seen[2]["device"] == "cpu" and seen[2]["dtype"] == torch.float32
