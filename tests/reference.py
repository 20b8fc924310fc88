"""The independent references live in hvp_utils.analysis.checks (notebooks call them too)."""

import hvp_utils as hu  # noqa: E402
from hvp_utils.analysis.checks import (  # noqa: F401
    component_index,
    endpoints,
    path_derivative,
    path_function,
    slice_function,
)
from hvp_utils.core.components import Component  # noqa: E402


class SquaredLogitDiff(hu.PatchingTask):
    """A metric quadratic in the final normalised residual stream, (logit(IO) - logit(S))^2:
    every patch path of that stream is a parabola (third derivative zero)."""

    def metric_per_prompt(self, logits):
        return super().metric_per_prompt(logits) ** 2


def quadratic_case(model, task, whole: bool = False):
    """The squared-logit-difference task and components of the final normalised stream at the
    last two positions (and the whole stream when ``whole``)."""
    squared = SquaredLogitDiff(task.clean_tokens, task.corrupted_tokens, task.answer_tokens)
    last = model.cfg.n_layers - 1
    comps = [
        Component(f"final@{p}", "custom", "ln_final.hook_normalized", last, ((1, p),))
        for p in (task.n_positions - 1, task.n_positions - 2)
    ]
    if whole:
        comps.append(Component("final", "custom", "ln_final.hook_normalized", last, ()))
    return squared, comps
