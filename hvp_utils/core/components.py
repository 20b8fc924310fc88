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

Each component carries its ``layer`` and, where its kind has them, its ``head``,
``position`` and ``neuron``: code reads these fields, never the name.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_utils.core.types import KINDS, Kind, Model, check_choice

#: Per kind: the activation name for ``get_act_name``, the name suffix, and the axes of the
#: component's (head or neuron, position) indices in that activation.
_HEAD_KINDS = {"head_out": ("z", ""), "head_q": ("q", ".q"), "head_k": ("k", ".k")}
#: Kinds with one component per attention head (per position too for ``head_out_pos``).
HEAD_KINDS = (*_HEAD_KINDS, "head_out_pos", "head_pattern")
_NEURON_KINDS = {"neuron": ("post", ""), "neuron_pre": ("pre", ".pre")}


@dataclass(frozen=True)
class Component:
    """A slice of one hook's activation: ``act[:, ...][select]`` with ``select`` as
    ((axis, index), ...) on the activation's axes (axis 0 is the batch).

    Attributes:
        name: unique display name (``L3H2``, ``MLP1``, ...).
        kind: one of :data:`~hvp_utils.core.types.KINDS`, or any label for a custom slice.
        hook: the TransformerLens hook whose activation holds the slice.
        layer: the block the hook belongs to (the engine starts its passes there).
        select: the fixed ``(axis, index)`` pairs.
        head: the head of a head kind (a key/value head for ``head_k``), else None.
        position: the position of a per-position kind (``head_out_pos``, ``resid_pos``),
            else None.
        neuron: the neuron of ``neuron`` and ``neuron_pre``, else None.
    """

    name: str
    kind: str
    hook: str
    layer: int
    select: tuple[tuple[int, int], ...]
    head: int | None = field(default=None, kw_only=True)
    position: int | None = field(default=None, kw_only=True)
    neuron: int | None = field(default=None, kw_only=True)

    def mask(
        self, act_shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32, device=None
    ) -> Tensor:
        """The 0/1 indicator of the component in an activation of shape ``act_shape``.

        Args:
            act_shape: the activation's shape (batch first).
            dtype, device: of the mask.

        Returns:
            ``mask`` broadcastable to ``act_shape`` (size 1 on every axis not in ``select``)
            with ``mask[index] = 1`` exactly at the selected indices.
        """
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
        """The component's entries of an activation.

        Args:
            act: an activation at :attr:`hook` (or anything shaped like it), batch first.

        Returns:
            ``act[select]``: the selected axes indexed away, every other axis kept.
        """
        index: list = [slice(None)] * act.dim()
        for axis, i in self.select:
            index[axis] = i
        return act[tuple(index)]


def n_kv_heads(cfg) -> int:
    """Key/value heads per layer.

    Args:
        cfg: a ``TransformerBridgeConfig``.

    Returns:
        ``cfg.n_key_value_heads`` under grouped-query attention, else ``cfg.n_heads``.
    """
    return getattr(cfg, "n_key_value_heads", None) or cfg.n_heads


def query_heads(cfg, kind: str, head: int) -> list[int]:
    """The query heads whose output a head-indexed component feeds.

    Args:
        cfg: a ``TransformerBridgeConfig``.
        kind: the component kind (``head_k``/``head_v`` index key/value heads).
        head: the component's head index.

    Returns:
        ``[head]``, or for a key/value head under grouped-query attention its whole group
        ``[head * g, (head + 1) * g)`` with ``g = n_heads / n_kv_heads``.
    """
    if kind not in ("head_k", "head_v"):
        return [head]
    group = cfg.n_heads // n_kv_heads(cfg)
    return list(range(head * group, (head + 1) * group))


def components(
    model: Model,
    kind: Kind,
    *,
    layers: list[int] | None = None,
    positions: list[int] | None = None,
    n_positions: int | None = None,
    heads: Collection[tuple[int, int]] | None = None,
) -> list[Component]:
    """Every component of ``kind`` in ``model`` (optionally only some layers/positions/heads).

    Args:
        model: the model whose hooks the components live on.
        kind: one of :data:`~hvp_utils.core.types.KINDS` (table in the module docstring).
        layers: the layers to include (default: all).
        positions: the positions of per-position kinds (``head_out_pos``, ``resid_pos``).
        n_positions: instead of ``positions``, all of ``0..n_positions-1`` (the task's
            sequence length); per-position kinds need one of the two.
        heads: ``(layer, head)`` pairs of query heads to keep in the per-head kinds (a sample,
            :func:`hvp_utils.sample_heads`); key heads shared by grouped-query attention
            are kept when a head that reads them is. None: every head. Other kinds ignore it.

    Returns:
        The components, layer by layer (within a layer: head or neuron, then position).
    """
    check_choice(kind, KINDS, "component kind")
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    if kind in ("head_out_pos", "resid_pos"):
        if positions is None and n_positions is None:
            raise ValueError(f"{kind} needs positions=[...] or n_positions=task.n_positions")
        positions = list(range(n_positions)) if positions is None else positions
    comps = [c for layer in layers for c in _layer_components(model, kind, layer, positions)]
    if heads is not None and kind in HEAD_KINDS:
        kept = set(heads)
        comps = [
            c
            for c in comps
            if any((c.layer, h) in kept for h in query_heads(model.cfg, kind, c.head))
        ]
    if not comps:
        raise ValueError(
            f"no {kind} components for layers={layers}, positions={positions}, heads={heads}"
        )
    return comps


def _layer_components(
    model: Model, kind: Kind, layer: int, positions: list[int] | None
) -> list[Component]:
    """The components of ``kind`` in one layer."""
    cfg = model.cfg
    if kind in _HEAD_KINDS:
        act, suffix = _HEAD_KINDS[kind]
        heads = n_kv_heads(cfg) if kind == "head_k" else cfg.n_heads
        hook = get_act_name(act, layer)
        return [
            Component(f"L{layer}H{h}{suffix}", kind, hook, layer, ((2, h),), head=h)
            for h in range(heads)
        ]
    if kind == "head_out_pos":
        hook = get_act_name("z", layer)
        return [
            Component(f"L{layer}H{h}@{p}", kind, hook, layer, ((1, p), (2, h)), head=h, position=p)
            for h in range(cfg.n_heads)
            for p in positions
        ]
    if kind == "head_pattern":
        hook = get_act_name("pattern", layer)
        return [
            Component(f"L{layer}H{h}.pattern", kind, hook, layer, ((1, h),), head=h)
            for h in range(cfg.n_heads)
        ]
    if kind == "mlp_out":
        return [Component(f"MLP{layer}", kind, get_act_name("mlp_out", layer), layer, ())]
    if kind in _NEURON_KINDS:
        act, suffix = _NEURON_KINDS[kind]
        hook = get_act_name(act, layer)
        return [
            Component(f"L{layer}N{i}{suffix}", kind, hook, layer, ((2, i),), neuron=i)
            for i in range(cfg.d_mlp)
        ]
    hook = get_act_name("resid_pre", layer)
    return [Component(f"R{layer}@{p}", kind, hook, layer, ((1, p),), position=p) for p in positions]


def check_components(comps: list[Component]) -> list[Component]:
    """Reject an empty component set or repeated names.

    Args:
        comps: the components an estimator was given.

    Returns:
        ``comps`` as a list; raises ``ValueError`` when it is empty or a name repeats.
    """
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
    """The components grouped by hook.

    Args:
        comps: components on any hooks.

    Returns:
        ``{hook: [i, ...]}``, the indices into ``comps`` of the components on each hook, in
        order of first appearance.
    """
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(comps):
        groups.setdefault(c.hook, []).append(i)
    return groups
