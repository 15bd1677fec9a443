"""The optimiser of both networks: Adam on a step-decay schedule, with optional
global-norm clipping and per-parameter learning-rate multipliers (`optim.lr_mults`,
`(regex, multiplier)` rules matched against parameter paths such as
"generator/dense_motion_network/mask/kernel")."""

from __future__ import annotations

import re
from typing import Any

import jax
import ml_collections
import optax

from asrth_jax.errors import ConfigError


def lr_schedule(optim: ml_collections.ConfigDict) -> optax.Schedule:
    """Step decay x`decay_factor` at each milestone; the optimiser and the log share it."""
    return optax.piecewise_constant_schedule(
        optim.lr, {int(m): float(optim.decay_factor) for m in optim.decay_milestones})


def parameter_path(path: tuple) -> str:
    """"generator/dense_motion_network/mask/kernel" for a key path into an nnx.State."""
    return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def lr_multipliers(params: Any, rules: tuple) -> Any:
    """Per-parameter learning-rate multipliers: the first `(regex, multiplier)` rule
    whose regex is found in the parameter's path, else 1."""
    def pick(path, _):
        name = parameter_path(path)
        return next((float(m) for pattern, m in rules if re.search(pattern, name)), 1.0)

    return jax.tree_util.tree_map_with_path(pick, params)


def check_lr_mults(rules: tuple, *param_trees: Any) -> None:
    """A rule that matches no parameter is a typo: one line naming it."""
    names = [parameter_path(path) for tree in param_trees
             for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    for pattern, _ in rules:
        if not any(re.search(pattern, name) for name in names):
            raise ConfigError(f"config.optim.lr_mults pattern {pattern!r} matches no "
                              f"parameter; paths look like {names[0]!r}")


def scale_by_lr_mults(rules: tuple) -> optax.GradientTransformation:
    """Multiplies each update by its parameter's `lr_multipliers` value (stateless)."""
    def update(updates, state, params=None):
        del params
        mults = lr_multipliers(updates, rules)
        return jax.tree.map(lambda u, m: u if m == 1.0 else u * m, updates, mults), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(optim: ml_collections.ConfigDict, grad_clip_norm: float
                   ) -> optax.GradientTransformation:
    """Adam(b1, b2) on `lr_schedule`, with optional global-norm clipping and
    per-parameter learning-rate multipliers (`optim.lr_mults`)."""
    parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm > 0 else []
    parts.append(optax.adam(lr_schedule(optim), b1=optim.b1, b2=optim.b2))
    if optim.lr_mults:
        parts.append(scale_by_lr_mults(tuple(tuple(r) for r in optim.lr_mults)))
    return optax.chain(*parts)
