"""What keeps the train step's XLA program small, and that it computes what the plain
code computes: repeated blocks as one scan (`blocks.apply_in_sequence`), the head-pose
estimator's three calls as one (`AdaSRGenerator.head_poses`, grouped BatchNorm)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asrth_jax.models import blocks


def _bottlenecks(count: int, features: int = 16, unbiased: bool = True) -> nnx.List:
    layers = nnx.List([blocks.ResBottleneck(features, 1, rngs=nnx.Rngs(i))
                       for i in range(count)])
    blocks.set_running_variance(layers, "unbiased" if unbiased else "biased")
    layers.train()
    return layers


def _run(graph_def, state, x, in_sequence: bool):
    layers = nnx.merge(graph_def, state)
    if in_sequence:
        y = blocks.apply_in_sequence(layers, x)
    else:
        y = x
        for layer in layers:
            y = layer(y)
    return y, nnx.state(layers, nnx.Not(nnx.Param))


def _max_difference(a, b) -> float:
    return max(float(jnp.abs(p - q).max())
               for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_alike_layers_run_as_one_scan_with_the_loops_values_and_statistics():
    graph_def, state = nnx.split(_bottlenecks(3))
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    loop_out, loop_stats = jax.jit(_run, static_argnums=(0, 3))(graph_def, state, x, False)
    scan_out, scan_stats = jax.jit(_run, static_argnums=(0, 3))(graph_def, state, x, True)
    assert _max_difference(loop_out, scan_out) == 0.0
    assert _max_difference(loop_stats, scan_stats) == 0.0
    # the running statistics did move: the scan wrote each layer's own back
    assert _max_difference(loop_stats, nnx.state(_bottlenecks(3), nnx.Not(nnx.Param))) > 0

    def loss(params, rest, x, in_sequence):
        rest = jax.tree.map(lambda leaf: leaf, rest)  # Variables of this trace: mutable
        return _run(graph_def, nnx.merge_state(params, rest), x, in_sequence)[0].sum()

    params, rest = nnx.split_state(state, nnx.Param, ...)
    grads = [jax.jit(jax.grad(loss), static_argnums=3)(params, rest, x, flag)
             for flag in (False, True)]
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(grads[0])[0],
                            jax.tree.leaves(grads[1]), strict=True):
        if "bias" in jax.tree_util.keystr(path) and "conv" in jax.tree_util.keystr(path):
            continue  # a bias before BatchNorm has no gradient: both are rounding noise
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(a).max()))

    program = jax.make_jaxpr(lambda s, x: _run(graph_def, s, x, True))(state, x)
    assert "scan" in str(program)
    assert str(program).count("conv_general_dilated") == 3  # one bottleneck's convs


def test_unlike_layers_and_a_dtype_changing_first_layer_run_one_by_one():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    unlike = nnx.List([blocks.ResBottleneck(16, 1, rngs=nnx.Rngs(0)),
                       blocks.ResBottleneck(16, 2, rngs=nnx.Rngs(1))])
    unlike.eval()
    program = str(jax.make_jaxpr(lambda x: blocks.apply_in_sequence(unlike, x))(x))
    assert "scan" not in program and program.count("conv_general_dilated") == 7
    # a bfloat16 input to float32 layers: the first one's output is float32, so it runs
    # before the scan (a carry must keep its dtype) and the values are the loop's
    cast = nnx.List([blocks.ResBottleneck(16, 1, rngs=nnx.Rngs(i)) for i in range(3)])
    cast.eval()
    half = x.astype(jnp.bfloat16)
    out = jax.jit(lambda x: blocks.apply_in_sequence(cast, x))(half)

    def loop(x):
        for layer in cast:
            x = layer(x)
        return x

    reference = jax.jit(loop)(half)
    assert out.dtype == reference.dtype == jnp.float32
    assert float(jnp.abs(out - reference).max()) == 0.0
    program = str(jax.make_jaxpr(lambda x: blocks.apply_in_sequence(cast, x))(half))
    assert "scan" in program and program.count("conv_general_dilated") == 6


@pytest.mark.parametrize("running_var", ["unbiased", "biased"])
def test_grouped_batchnorm_equals_one_call_per_group_in_order(running_var):
    def fresh():
        norm = blocks.batch_norm(4, rngs=nnx.Rngs(0))
        blocks.set_running_variance(norm, running_var)
        norm.train()
        return norm

    groups = [jax.random.normal(jax.random.key(g), (3, 5, 5, 4)) * (g + 1) + g
              for g in range(3)]
    separate = fresh()
    expected = [separate(x) for x in groups]
    grouped = fresh()
    blocks.set_statistics_groups(grouped, 3)
    got = blocks.deinterleave(grouped(blocks.interleave(groups)), 3)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(grouped.mean[...], separate.mean[...], rtol=1e-5)
    np.testing.assert_allclose(grouped.var[...], separate.var[...], rtol=1e-5)


def test_the_train_step_calls_the_head_pose_estimator_once(monkeypatch):
    """Source, driving and the equivariance pass's warped frames go through the
    estimator as one call: XLA compiles it once, not three times."""
    from train_helpers import TINY

    from asrth_jax import sharding
    from asrth_jax.config_lib import load_config_file
    from asrth_jax.models.head_pose import HEEstimator
    from asrth_jax.teachers import FrozenNetworks
    from asrth_jax.train_step import TrainSetup

    config = load_config_file(TINY)
    assert config.loss.equivariance_value > 0
    unused = FrozenNetworks(perceptual=nnx.Linear(1, 1, rngs=nnx.Rngs(0)), hopenet=None)
    with config.unlocked():
        config.loss.perceptual_scales = ()
        config.loss.headpose = config.loss.head_translation = 0.0
        config.loss.landmark_keypoints = 0.0
    trainer = TrainSetup(config, sharding.make_mesh(config.mesh, jax.devices()[:1]), unused)
    batch_sizes = []
    original = HEEstimator.__call__

    def counting(self, image):
        batch_sizes.append(image.shape[0])
        return original(self, image)

    monkeypatch.setattr(HEEstimator, "__call__", counting)
    size = config.image_size
    batch = {k: np.zeros((2, size, size, 3), np.float32)
             for k in ("source", "source_lq", "driving")}
    jax.eval_shape(trainer.train_step, trainer.abstract_state(), batch, trainer.frozen_state)
    assert batch_sizes == [6]
