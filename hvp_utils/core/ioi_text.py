"""Text side of the IOI task: names, templates, and the train / held-out split.

An IOI sentence names two people, repeats one of them (the subject S) and ends where the
other one (the indirect object IO) is the natural continuation:

    When Mary and John went to the store, John gave a drink to   ->  Mary

Templates carry the slots ``{N1} {N2}`` (the first two mentions, in the order IO,S ("ABBA")
or S,IO ("BABA")), ``{S}`` (the repeated subject), ``{PLACE}`` and ``{OBJECT}``.

The held-out split, used by default for every evaluation, is (a) every held-out template
and (b) on training templates, the (template, IO, S) combinations that
:func:`is_heldout_combination` sets aside. The toy model never trains on either.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
IOI_VOCAB_FILE = DATA_DIR / "ioi" / "ioi_vocab.json"

#: A space before punctuation, as the templates write it.
PUNCTUATION_AFTER_SPACE = re.compile(r" ([,.;:!?])")
#: One in this many (template, IO, S) combinations of a training template is held out.
HELDOUT_COMBINATION_MODULUS = 5

#: The order of the first two name mentions: IO first ("ABBA") or S first ("BABA").
Order = Literal["ABBA", "BABA"]
#: Which (template, IO, S) combinations a prompt may use: the training ones, the held-out
#: ones, or any.
Split = Literal["train", "heldout", "any"]


@lru_cache(maxsize=1)
def ioi_vocab() -> dict:
    """Names, places, objects and templates from ``data/ioi/ioi_vocab.json``."""
    with open(IOI_VOCAB_FILE) as f:
        return json.load(f)


@dataclass(frozen=True)
class IOIPrompt:
    """One IOI prompt: its text, the names in it and what produced it."""

    text: str
    io: str
    s: str
    template: str
    order: Order
    place: str
    obj: str

    def fill(self, *, template: str | None = None, **names: str) -> str:
        """The prompt with names replaced: ``fill(io=..., s=..., s2=...)``."""
        return fill_template(
            template or self.template,
            io=names.get("io", self.io),
            s=names.get("s", self.s),
            s2=names.get("s2", names.get("s", self.s)),
            order=self.order,
            place=self.place,
            obj=self.obj,
        )


def natural_text(words: str) -> str:
    """Text as a person writes it: the templates separate punctuation by spaces
    (``"store , John"``), prompts do not (``"store, John"``), so that byte-level BPE
    tokenizers see ordinary text; the word-level toy tokenizer splits punctuation itself."""
    return PUNCTUATION_AFTER_SPACE.sub(r"\1", words)


def fill_template(
    template: str, *, io: str, s: str, s2: str, order: Order, place: str, obj: str
) -> str:
    """Fill the slots of one template; ``s2`` is the name in the repeated-subject slot."""
    first, second = (io, s) if order == "ABBA" else (s, io)
    return natural_text(template.format(N1=first, N2=second, S=s2, PLACE=place, OBJECT=obj))


def is_heldout_combination(template: str, io: str, s: str) -> bool:
    """Deterministic split of (template, IO, S) triples: one in five is held out."""
    key = f"{template}|{io}|{s}".encode()
    return zlib.crc32(key) % HELDOUT_COMBINATION_MODULUS == 0


def sample_prompt(
    rng: random.Random, templates: list[str], names: list[str], *, split: Split
) -> IOIPrompt:
    """Draw one prompt from ``templates`` whose (template, IO, S) lies in ``split``.

    ``split`` is "train" (combination not held out), "heldout" (held out) or "any".
    """
    vocab = ioi_vocab()
    while True:
        template = rng.choice(templates)
        io, s = rng.sample(names, 2)
        if split != "any" and is_heldout_combination(template, io, s) != (split == "heldout"):
            continue
        order = rng.choice(["ABBA", "BABA"])
        place, obj = rng.choice(vocab["places"]), rng.choice(vocab["objects"])
        text = fill_template(template, io=io, s=s, s2=s, order=order, place=place, obj=obj)
        return IOIPrompt(text, io, s, template, order, place, obj)


def heldout_prompt_sources() -> list[tuple[str, Split]]:
    """(template, split) pairs that make up the held-out evaluation split."""
    vocab = ioi_vocab()
    return [(t, "any") for t in vocab["heldout_templates"]] + [
        (t, "heldout") for t in vocab["train_templates"]
    ]


def sample_heldout_prompts(
    rng: random.Random, n: int, names: list[str], *, n_words: int | None = None
) -> list[IOIPrompt]:
    """``n`` prompts from the held-out split, optionally only templates of ``n_words`` words."""
    sources = [
        (t, split)
        for t, split in heldout_prompt_sources()
        if n_words is None or len(t.split()) == n_words
    ]
    if not sources:
        raise ValueError(f"no held-out IOI template has {n_words} words")
    prompts = []
    for _ in range(n):
        template, split = rng.choice(sources)
        prompts.append(sample_prompt(rng, [template], names, split=split))
    return prompts


def fill_words(template: str, rng: random.Random) -> str:
    """Fill each {PLACE} and {OBJECT} slot of ``template`` independently."""
    vocab = ioi_vocab()
    while "{PLACE}" in template or "{OBJECT}" in template:
        template = template.replace("{PLACE}", rng.choice(vocab["places"]), 1)
        template = template.replace("{OBJECT}", rng.choice(vocab["objects"]), 1)
    return template


def every_name() -> list[str]:
    """Training names and held-out names: the names of evaluation prompts."""
    vocab = ioi_vocab()
    return vocab["names"] + vocab.get("heldout_names", [])


def lm_sentence(rng: random.Random) -> str:
    """A non-IOI sentence over the same words, its names drawn from every name (held-out
    names too: they are ordinary words of the language, never IOI answers in training)."""
    template = fill_words(rng.choice(ioi_vocab()["lm_templates"]), rng)
    n1, n2 = rng.sample(every_name(), 2)
    return natural_text(template.format(N1=n1, N2=n2))


def filler_sentence(rng: random.Random) -> str:
    """A sentence without names."""
    return natural_text(fill_words(rng.choice(ioi_vocab()["filler_sentences"]), rng))


def repeated_span(rng: random.Random) -> str:
    """A span of 3-6 random names, places and objects, a filler, and the span again: text in
    which the continuation is predictable only by finding the earlier copy (induction)."""
    vocab = ioi_vocab()
    words = every_name() + vocab["places"] + vocab["objects"]
    span = " ".join(rng.choices(words, k=rng.randint(3, 6)))
    return f"{span} . {filler_sentence(rng)} {span} ."


def three_names(rng: random.Random) -> str:
    """Three people, two of them mentioned again; the one not repeated is the answer."""
    a, b, c = rng.sample(every_name(), 3)
    place, obj = rng.choice(ioi_vocab()["places"]), rng.choice(ioi_vocab()["objects"])
    first, second = rng.sample([b, c], 2)
    return natural_text(
        f"{a} , {b} and {c} went to the {place} . {first} and {second} gave a {obj} to {a} ."
    )


def ioi_training_sentence(rng: random.Random, *, s_answer_fraction: float) -> str:
    """A completed IOI sentence of the train split; in ``s_answer_fraction`` of them the
    sentence ends with S, so that the answer is likely, not certain."""
    vocab = ioi_vocab()
    prompt = sample_prompt(rng, vocab["train_templates"], vocab["names"], split="train")
    answer = prompt.s if rng.random() < s_answer_fraction else prompt.io
    return f"{prompt.text} {answer}."


def training_sentence(
    rng: random.Random,
    *,
    ioi_fraction: float = 0.4,
    s_answer_fraction: float = 0.05,
    three_names_fraction: float = 0.2,
    max_preceding: int = 3,
) -> str:
    """One training text: 0 to ``max_preceding`` preceding sentences (70% without names),
    then an IOI sentence (``ioi_fraction``) or general text in which repetition must be
    tracked: repeated spans (15%), three people of whom two recur (``three_names_fraction``;
    every name, held-out ones too), names re-mentioned in other sentences (the rest)."""
    preceding = [
        filler_sentence(rng) if rng.random() < 0.7 else lm_sentence(rng)
        for _ in range(rng.randint(0, max_preceding))
    ]
    draw = rng.random()
    if draw < ioi_fraction:
        main = ioi_training_sentence(rng, s_answer_fraction=s_answer_fraction)
    elif draw < ioi_fraction + 0.15:
        main = repeated_span(rng)
    elif draw < ioi_fraction + 0.15 + three_names_fraction:
        main = three_names(rng)
    else:
        main = lm_sentence(rng)
    return " ".join([*preceding, main])


def all_words() -> list[str]:
    """Every word the toy tokenizer must know, sorted."""
    vocab = ioi_vocab()
    words = set(every_name()) | set(vocab["places"]) | set(vocab["objects"])
    for key in ("train_templates", "heldout_templates", "lm_templates", "filler_sentences"):
        for template in vocab[key]:
            words |= {w for w in template.split() if not w.startswith("{")}
    return sorted(words)
