"""Components: named slices of hooked activations that patching and attribution act on.

A component ``c`` is a slice of one TransformerLens hook's activation, fixed by a few
(axis, index) pairs; every other axis (batch included) is taken whole. Its mask, broadcast
against the activation, selects it:

    kind           hook                         activation axes          name
    head_out       blocks.l.attn.hook_z         batch pos head d_head    L3H2
    head_out_pos   blocks.l.attn.hook_z         batch pos head d_head    L3H2@7
    head_q         blocks.l.attn.hook_q         batch pos head d_head    L3H2.q
    head_k         blocks.l.attn.hook_k         batch pos kv_head d_head L3H2.k
    head_pattern   blocks.l.attn.hook_pattern   batch head q_pos k_pos   L3H2.pattern
    mlp_out        blocks.l.hook_mlp_out        batch pos d_model        MLP1
    neuron         blocks.l.mlp.hook_post       batch pos d_mlp          L1N45
    neuron_pre     blocks.l.mlp.hook_pre        batch pos d_mlp          L1N45.pre
    resid_pos      blocks.l.hook_resid_pre      batch pos d_model        R1@7
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from hvp_utils.core.types import KINDS, Kind



@dataclass(frozen=True)
class Component:
    """A slice of one hook's activation: ``act[:, ...][select]`` with ``select`` as
    ((axis, index), ...) on the activation's axes (axis 0 is the batch)."""

    name: str
    kind: str
    hook: str
    layer: int
    select: tuple[tuple[int, int], ...]

    def mask(self, act_shape: tuple[int, ...], dtype=torch.float32, device=None) -> Tensor:
        """0/1 tensor broadcastable to ``act_shape`` (batch axis of size 1)."""
        shape = [1] * len(act_shape)
        for axis, _ in self.select:
            shape[axis] = act_shape[axis]
        mask = torch.zeros(shape, dtype=dtype, device=device)
        index = [slice(None)] * len(act_shape)
        for axis, i in self.select:
            index[axis] = slice(i, i + 1)
        mask[tuple(index)] = 1
        return mask

    def take(self, act: Float[Tensor, "batch ..."]) -> Tensor:
        """The component's entries of ``act`` (batch axis kept)."""
        index: list = [slice(None)] * act.dim()
        for axis, i in self.select:
            index[axis] = i
        return act[tuple(index)]


def n_kv_heads(cfg) -> int:
    """Key/value heads per layer: ``n_key_value_heads`` under grouped-query attention, else
    ``n_heads``."""
    return getattr(cfg, "n_key_value_heads", None) or cfg.n_heads


def query_heads(cfg, kind: str, head: int) -> list[int]:
    """The query heads whose output a head-indexed component of ``kind`` feeds: the head
    itself, or for a key/value head under grouped-query attention its whole group
    ``[head * g, (head + 1) * g)`` with ``g = n_heads / n_kv_heads``."""
    if kind not in ("head_k", "head_v"):
        return [head]
    group = cfg.n_heads // n_kv_heads(cfg)
    return list(range(head * group, (head + 1) * group))


def _heads(model: HookedTransformer, kind: str) -> int:
    return n_kv_heads(model.cfg) if kind == "head_k" else model.cfg.n_heads


def components(
    model: HookedTransformer,
    kind: Kind,
    layers: list[int] | None = None,
    positions: list[int] | None = None,
    n_positions: int | None = None,
) -> list[Component]:
    """Every component of ``kind`` in ``model`` (optionally only some layers/positions).

    Per-position kinds (``head_out_pos``, ``resid_pos``) need ``positions`` or
    ``n_positions`` (the task's sequence length).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; use one of {KINDS}")
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    if kind in ("head_out_pos", "resid_pos"):
        if positions is None and n_positions is None:
            raise ValueError(f"{kind} needs positions=[...] or n_positions=task.n_positions")
        positions = list(range(n_positions)) if positions is None else positions
    comps = [c for layer in layers for c in _layer_components(model, kind, layer, positions)]
    if not comps:
        raise ValueError(f"no {kind} components for layers={layers}, positions={positions}")
    return comps


def _layer_components(model, kind: str, layer: int, positions) -> list[Component]:
    cfg = model.cfg
    if kind in ("head_out", "head_q", "head_k"):
        hook = {"head_out": "hook_z", "head_q": "hook_q", "head_k": "hook_k"}[kind]
        suffix = {"head_out": "", "head_q": ".q", "head_k": ".k"}[kind]
        return [
            Component(
                f"L{layer}H{h}{suffix}", kind, f"blocks.{layer}.attn.{hook}", layer, ((2, h),)
            )
            for h in range(_heads(model, kind))
        ]
    if kind == "head_out_pos":
        return [
            Component(
                f"L{layer}H{h}@{p}", kind, f"blocks.{layer}.attn.hook_z", layer, ((1, p), (2, h))
            )
            for h in range(cfg.n_heads)
            for p in positions
        ]
    if kind == "head_pattern":
        return [
            Component(
                f"L{layer}H{h}.pattern", kind, f"blocks.{layer}.attn.hook_pattern", layer, ((1, h),)
            )
            for h in range(cfg.n_heads)
        ]
    if kind == "mlp_out":
        return [Component(f"MLP{layer}", kind, f"blocks.{layer}.hook_mlp_out", layer, ())]
    if kind in ("neuron", "neuron_pre"):
        hook, suffix = ("hook_post", "") if kind == "neuron" else ("hook_pre", ".pre")
        return [
            Component(f"L{layer}N{i}{suffix}", kind, f"blocks.{layer}.mlp.{hook}", layer, ((2, i),))
            for i in range(cfg.d_mlp)
        ]
    return [
        Component(f"R{layer}@{p}", kind, f"blocks.{layer}.hook_resid_pre", layer, ((1, p),))
        for p in positions
    ]


def check_components(comps: list[Component]) -> list[Component]:
    """Reject an empty component set or duplicated names."""
    comps = list(comps)
    if not comps:
        raise ValueError(
            "empty component set: build one with hvp_utils.core.components(model, kind), e.g. "
            "components(model, 'head_out')"
        )
    names = [c.name for c in comps]
    if len(set(names)) != len(names):
        raise ValueError("component names repeat; pass each component once")
    return comps


def group_by_hook(comps: list[Component]) -> dict[str, list[int]]:
    """Hook name -> indices (into ``comps``) of the components on that hook."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(comps):
        groups.setdefault(c.hook, []).append(i)
    return groups
