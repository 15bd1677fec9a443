"""Per-parameter learning-rate multipliers (`optim.lr_mults`, big_vision's lr_mults)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from asrth_jax import config_lib
from asrth_jax.errors import ConfigError
from asrth_jax.optimizer import check_lr_mults, make_optimizer


class _Net(nnx.Module):
    def __init__(self):
        self.mask = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        self.trunk = nnx.Linear(2, 2, rngs=nnx.Rngs(1))


def _updates(lr_mults: tuple) -> nnx.State:
    optim = config_lib.base_config().optim
    with optim.unlocked():
        optim.lr_mults = lr_mults
    params = nnx.state(_Net(), nnx.Param)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    tx = make_optimizer(optim, grad_clip_norm=0.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def test_first_matching_rule_scales_the_update_and_others_keep_it():
    plain = _updates(())
    scaled = _updates((("mask/kernel", 0.2), ("mask", 0.0)))
    np.testing.assert_allclose(scaled["mask"]["kernel"][...], 0.2 * plain["mask"]["kernel"][...])
    np.testing.assert_array_equal(scaled["mask"]["bias"][...], 0 * plain["mask"]["bias"][...])
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(scaled["trunk"][name][...], plain["trunk"][name][...])
    assert np.all(plain["mask"]["kernel"][...] != 0)
    assert isinstance(make_optimizer(config_lib.base_config().optim, 0.0),
                      optax.GradientTransformation)


def test_a_rule_matching_no_parameter_is_one_line():
    params = nnx.state(_Net(), nnx.Param)
    check_lr_mults((("trunk", 2.0),), params)
    with pytest.raises(ConfigError, match="'dense_motoin' matches no parameter.*'mask/bias'"):
        check_lr_mults((("dense_motoin", 0.2),), params)


@pytest.mark.parametrize("rules, message", [
    ((("mask", -1.0),), "must be \\(\\(regex, multiplier >= 0\\)"),
    (("mask",), "must be \\(\\(regex, multiplier >= 0\\)"),
    ((("mask[", 0.5),), "pattern 'mask\\[' is not a regular expression"),
])
def test_bad_lr_mults_are_one_config_error(rules, message):
    config = config_lib.base_config()
    with config.unlocked():
        config.optim.lr_mults = rules
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(config)
