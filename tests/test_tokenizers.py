"""IOI prompts for real tokenizers: a GPT-2-style byte-level BPE vocabulary, trained here on
generated text (nothing downloaded), on a tiny GPT-2 with that vocabulary."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import tiny_hf_model

import hvp_utils as hu
from hvp_utils.core.ioi_text import ioi_vocab, lm_sentence, sample_prompt

ENDOFTEXT = "<|endoftext|>"


def byte_level_bpe(directory, vocab_size: int = 1200):
    """A GPT-2-style tokenizer (byte-level pre-tokenizer and decoder, BPE merges, one
    ``<|endoftext|>`` token for bos/eos/pad) trained on IOI and other sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    vocab = ioi_vocab()
    templates = vocab["train_templates"] + vocab["heldout_templates"]
    corpus = [sample_prompt(rng, templates, vocab["names"], split="any").text for _ in range(3000)]
    corpus += [lm_sentence(rng) for _ in range(1000)]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT
    )
    # saved and reloaded, as from a checkpoint: TransformerLens reloads it by its path
    tokenizer.save_pretrained(str(directory))
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory):
    tokenizer = byte_level_bpe(tmp_path_factory.mktemp("bpe"))
    hf_model, _ = tiny_hf_model("gpt2", seed=2)
    hf_model.resize_token_embeddings(len(tokenizer))
    hf_model.config.bos_token_id = hf_model.config.eos_token_id = tokenizer.bos_token_id
    hf_model.config.pad_token_id = tokenizer.pad_token_id
    return hu.from_hf_model(hf_model, tokenizer, name="tiny-bpe-gpt2", dtype="float64")


def test_names_are_single_space_prefixed_tokens(bpe_model):
    tokens = bpe_model.to_str_tokens("When Mary and John went to the store, John gave")
    assert tokens[0] == ENDOFTEXT
    assert " Mary" in tokens and " John" in tokens and "," in tokens
    assert " ," not in tokens  # no artifact of a word-level vocabulary


@pytest.mark.parametrize("perturbation", ["name_swap", "random_token"])
def test_ioi_prompts_are_natural_text_with_aligned_single_token_names(bpe_model, perturbation):
    task = hu.ioi_dataset(bpe_model, n_prompts=6, perturbation=perturbation, seed=1)
    for prompt in task.clean_prompts:
        assert " ," not in prompt and " ." not in prompt
        assert bpe_model.to_string(bpe_model.to_tokens(prompt)[0, 1:]) == prompt
    assert task.clean_tokens.shape == task.corrupted_tokens.shape
    for (io, s), row in zip(task.answer_tokens.tolist(), task.clean_tokens, strict=True):
        for name_id in (io, s):
            text = bpe_model.to_single_str_token(name_id)
            assert text.startswith(" ") and text.strip() in ioi_vocab()["names"]
        assert (row == io).sum() == 1 and (row == s).sum() == 2
    if perturbation == "name_swap":
        for clean, corrupted in zip(task.clean_prompts, task.corrupted_prompts, strict=True):
            assert len(clean.split()) == len(corrupted.split())
    heads = hu.components(bpe_model, "head_out")
    truth = hu.activation_patching(bpe_model, task, heads)
    assert torch.isfinite(truth.values).all()
    assert hu.compare(hu.atp(bpe_model, task, heads), truth).pearson.iloc[0] > 0.5
