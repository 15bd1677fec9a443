"""What keeps the train step's XLA program small, and that it computes what the plain
code computes: the head-pose estimator's three calls as one
(`AdaSRGenerator.head_poses`, BatchNorm statistics per group)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asrth_jax.models import blocks


def _max_difference(a, b) -> float:
    return max(float(jnp.abs(p - q).max())
               for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


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


@pytest.mark.parametrize("batched, calls", [(True, [6]), (False, [2, 2, 2])])
def test_the_train_step_calls_the_head_pose_estimator_once(monkeypatch, batched, calls):
    """Source, driving and the equivariance pass's warped frames go through the
    estimator as one call (`train.batched_head_pose`): XLA compiles it once, not three
    times."""
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
        config.train.batched_head_pose = batched
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
    assert batch_sizes == calls


def test_head_poses_in_one_call_equal_one_call_per_batch_in_order():
    from asrth_jax.models.adasr import AdaSRGenerator
    from asrth_jax.models.head_pose import HEEstimator

    class Holder(nnx.Module):
        def __init__(self):
            self.he_estimator = HEEstimator(
                block_expansion=8, num_kp=2, image_channel=3, stage_features=(16, 16, 16, 16),
                stage_blocks=(1, 1, 1, 1), rngs=nnx.Rngs(0))
            self.he_estimator.fc_t.kernel[...] = jax.random.normal(
                jax.random.key(3), self.he_estimator.fc_t.kernel.shape)
            blocks.set_running_variance(self, "unbiased")
            self.train()

    images = [jax.random.uniform(jax.random.key(g), (2, 32, 32, 3)) * (g + 1)
              for g in range(3)]
    separate, grouped = Holder(), Holder()
    expected = [separate.he_estimator(x) for x in images]
    got = AdaSRGenerator.head_poses(grouped, *images)
    for a, b in zip(expected, got, strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-3, atol=1e-4)
    assert _max_difference(nnx.state(separate, nnx.BatchStat),
                           nnx.state(grouped, nnx.BatchStat)) < 1e-4
    # the grouping is for that call only
    assert all(m.statistics_groups == 1 for _, m in nnx.iter_modules(grouped)
               if isinstance(m, blocks.BatchNorm))
