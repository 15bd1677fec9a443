"""The train step in-process (the Flax examples' train_test style): a typed state in, a
typed state and finite losses out, and the checkpoint mapping of that state both ways.
Tiny config on one device; the multi-device and multi-process runs are in
test_train_sharding.py and test_train.py."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from train_helpers import TINY


@pytest.fixture(scope="module")
def setup_and_state():
    from asrth_jax import sharding
    from asrth_jax.config_lib import load_config_file
    from asrth_jax.train_step import TrainSetup

    config = load_config_file(TINY)
    with config.unlocked():
        config.mesh.data = 1  # one device whatever the host has
        # The synthetic-data teachers of the dense motion (the demo's), here only: the
        # sharding and multi-process tests keep the lighter tiny config.
        config.loss.landmark_motion = config.loss.background_motion = 1.0
    setup = TrainSetup(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
    return config, setup, setup.init_state(config.seed)


def _host(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def test_one_step_updates_every_part_of_the_state(setup_and_state):
    from asrth_jax.train_state import TrainState
    from data_pipelines.pipeline import make_train_loader

    config, setup, state = setup_and_state
    before = jax.device_get(state)
    batch = next(make_train_loader(config.data, seed=config.seed,
                                   global_batch_size=config.train.global_batch_size))
    # A copy: the jitted step donates its state argument.
    after, scalars = setup.train_step(jax.device_put(before, setup.state_sharding),
                                      setup.shard_batch(batch), setup.frozen_state)
    assert isinstance(after, TrainState)
    assert int(after.step) == int(before.step) + 1
    assert not np.array_equal(jax.random.key_data(after.rng), jax.random.key_data(before.rng))
    assert list(after.networks()) == ["generator_side", "discriminator"]
    for name, network in after.networks().items():
        for part in ("params", "rest", "opt"):
            old = _host(getattr(before.networks()[name], part))
            new = _host(getattr(network, part))
            assert len(old) == len(new) and any(not np.array_equal(a, b) for a, b in zip(
                old, new, strict=True)), (name, part)
    scalars = {k: float(v) for k, v in jax.device_get(scalars).items()}
    loss = config.loss
    expected = {"perceptual", "generator_total", "generator_grad_norm", "generator_gan",
                "feature_matching", "discriminator_gan", "equivariance_value",
                "keypoint_prior", "headpose", "head_translation", "landmark_keypoints",
                "landmark_motion", "background_motion", "expression"}
    assert loss.generator_gan and loss.equivariance_value and loss.head_translation
    assert loss.landmark_keypoints and loss.landmark_motion and loss.background_motion
    assert expected <= set(scalars) and all(np.isfinite(v) for v in scalars.values())
    terms = [scalars[k] for k in expected - {"generator_total", "generator_grad_norm",
                                             "discriminator_gan"}]
    np.testing.assert_allclose(scalars["generator_total"], sum(terms), rtol=1e-5)


def test_checkpoint_items_map_back_to_the_same_state(setup_and_state):
    from asrth_jax import checkpoints

    _, setup, state = setup_and_state
    items = checkpoints.state_to_items(state)
    assert set(items) == {"models", "optimizer", "meta"}
    assert set(items["models"]) == {"generator_side", "discriminator"}  # model_state's
    assert set(items["optimizer"]) == {"gen_opt", "disc_opt"}  # as the first runs wrote it
    back = checkpoints.items_to_state(items, setup.abstract_state())
    assert jax.tree.structure(back) == jax.tree.structure(state)
    for a, b in zip(_host(back), _host(state), strict=True):
        np.testing.assert_array_equal(a, b)
