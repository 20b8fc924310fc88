"""The independent references live in hvp_utils.checks (notebooks call them too)."""

from hvp_utils.checks import (  # noqa: F401
    component_index,
    endpoints,
    path_derivative,
    path_function,
    slice_function,
)
