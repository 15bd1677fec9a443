"""The reference training recipe, fact for fact: the paper configs' numbers, the
teachers, pair sampling and augmentation, epoch schedules, and the discriminator's
spectral-norm power iterations per step."""

from __future__ import annotations

import logging
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from train_helpers import REPO, TINY

from asrth_jax import schedule
from asrth_jax.config_lib import load_config_file
from asrth_jax.optimizer import lr_schedule
from asrth_jax.teachers import check_teachers
from data_pipelines.augment import AugmentPair
from data_pipelines.sources import PairSource

HDTF = str(REPO / "configs" / "hdtf_512.py")
VOX = str(REPO / "configs" / "vox.py")
DEMO = str(REPO / "configs" / "demo.py")


# ---------------------------------------------------------------- the paper configs
@pytest.mark.parametrize("path,repeats,epochs,batch,milestone", [
    (HDTF, 5, 200, 4, 16), (VOX, 75, 300, 32, 180)])
def test_paper_configs_state_the_reference_recipe(path, repeats, epochs, batch, milestone):
    c = load_config_file(path)
    assert c.data.id_sampling and c.data.num_repeats == repeats
    assert (c.train.num_epochs, c.train.num_steps) == (epochs, 0)
    assert c.train.global_batch_size == batch
    assert tuple(c.optim.decay_epochs) == (milestone,) and c.optim.decay_factor == 0.1
    assert not c.optim.decay_milestones
    assert (c.optim.lr, c.optim.b1, c.optim.b2) == (2e-4, 0.5, 0.999)
    loss = c.loss
    assert loss.perceptual_network == "vgg19" and tuple(loss.perceptual) == (10.0,) * 5
    assert tuple(loss.perceptual_scales) == (1.0, 0.5, 0.25, 0.125)
    assert (loss.headpose, loss.headpose_teacher) == (20.0, "hopenet")
    assert loss.reconstruction_l1 == 0.0  # the released config gives no weight
    # keypoints and motion unsupervised, as in the reference (the demo's teachers are off)
    assert (loss.head_translation, loss.landmark_keypoints, loss.landmark_motion,
            loss.background_motion) == (0.0,) * 4
    assert (loss.generator_gan, loss.discriminator_gan, loss.equivariance_value,
            loss.keypoint_prior, loss.expression) == (1.0, 1.0, 10.0, 10.0, 5.0)
    # AdaSR's chain, its once-per-GPU-batch choices shared by each batch
    assert (c.data.degradation.preset, c.data.degradation.realesrgan2.draw_per) == (
        "realesrgan2", "batch")
    aug = c.data.augmentation
    assert aug.flip and aug.time_flip
    assert (aug.brightness, aug.contrast, aug.saturation, aug.hue) == (0.1,) * 4


def test_demo_names_its_teacher_substitutes():
    """The demo needs no weight file: LPIPS's bundled VGG16 for VGG19, and the synthetic
    data's truth (pose, head centre, landmarks, head masks) for HopeNet and as teachers
    of the keypoints and the dense motion; only synthetic data has it."""
    loss = load_config_file(DEMO).loss
    assert loss.perceptual_network == "lpips_vgg16" and loss.headpose_teacher == "data"
    assert loss.headpose and loss.head_translation and loss.landmark_keypoints
    assert loss.landmark_motion and loss.background_motion
    check_teachers(loss, "synthetic")  # needs no file
    with pytest.raises(ValueError, match="only data.kind='synthetic'"):
        check_teachers(loss, "vox")


# ---------------------------------------------------------------- teachers
def test_missing_teacher_files_are_one_line_with_the_fix(tmp_path):
    loss = load_config_file(HDTF).loss
    with pytest.raises(ValueError) as err:
        check_teachers(loss, "tfds")
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("config.loss.vgg19_weights", "weights/vgg19.npz",
                 "python -m asrth_jax.convert --vgg19 FILE --out DIR",
                 "--config.loss.perceptual_network=lpips_vgg16", "config.loss.hopenet_weights",
                 "python -m asrth_jax.convert --hopenet FILE --out DIR",
                 "--config.loss.headpose=0"):
        assert part in msg, part
    loss.hopenet_weights = ""
    loss.perceptual_network = "lpips_vgg16"
    with pytest.raises(ValueError, match="hopenet_weights, which is empty") as err:
        check_teachers(loss, "tfds")
    assert "vgg19" not in str(err.value)
    loss.headpose = 0.0
    check_teachers(loss, "tfds")  # the explicit override trains without HopeNet
    for name in ("vgg19.npz", "hopenet.npz"):  # read for their headers only
        np.savez(tmp_path / name, stand_in=np.zeros(1, np.float32))
    loss.perceptual_network, loss.headpose = "vgg19", 20.0
    loss.vgg19_weights = str(tmp_path / "vgg19.npz")
    loss.hopenet_weights = str(tmp_path / "hopenet.npz")
    check_teachers(loss, "tfds")


def test_training_without_a_teacher_file_stops_before_data(tmp_path, jax_env):
    """configs/hdtf_512.py has no dataset here either: the teacher is named first."""
    out = subprocess.run(
        [sys.executable, "-m", "asrth_jax.train", f"--config={HDTF}",
         f"--workdir={tmp_path / 'w'}", f"--config.data.tfds_dir={tmp_path / 'none'}"],
        env=jax_env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert "vgg19_weights" in line and "--vgg19 FILE" in line and "data_pipelines" not in line


# ---------------------------------------------------------------- schedule
def _length(num_epochs=0, num_steps=0, decay_epochs=(), decay_milestones=()):
    c = load_config_file(HDTF)
    c.train.num_epochs, c.train.num_steps = num_epochs, num_steps
    c.optim.decay_epochs, c.optim.decay_milestones = decay_epochs, decay_milestones
    return c


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_epochs=2, num_steps=5), "both set.*--config.train.num_epochs=0"),
    (dict(), "neither config.train.num_epochs nor config.train.num_steps"),
    (dict(num_steps=5, decay_epochs=(1,), decay_milestones=(3,)), "decay_epochs=.1,. and"),
    (dict(num_steps=5, decay_milestones=(0,)), "must be positive"),
])
def test_training_length_is_given_one_way(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        schedule.check_training_length(_length(**kwargs))
    assert "\n" not in str(err.value)


def test_epochs_become_steps_once_the_dataset_is_counted(caplog):
    # 30 identities x 5 repeats = 150 records; batch 4 drops the last: 37 steps an epoch.
    config = load_config_file(HDTF)
    with caplog.at_level(logging.INFO):
        steps = schedule.resolve_epochs(config, 150)
    assert steps.train.num_steps == 200 * 37 and not steps.train.num_epochs
    assert tuple(steps.optim.decay_milestones) == (16 * 37,) and not steps.optim.decay_epochs
    lr = lr_schedule(steps.optim)
    assert float(lr(16 * 37 - 1)) == pytest.approx(2e-4)  # the last step of epoch 15
    assert float(lr(16 * 37)) == pytest.approx(2e-5)  # the first of epoch 16
    line = caplog.messages[-1]
    assert "37 steps" in line and "200 epochs = 7400 steps" in line and "(592,)" in line
    assert config.train.num_epochs == 200  # the caller's config is left as it was
    in_steps = schedule.resolve_epochs(_length(num_steps=7, decay_milestones=(5,)), 150)
    assert in_steps.train.num_steps == 7 and tuple(in_steps.optim.decay_milestones) == (5,)
    with pytest.raises(ValueError, match="3 training records are fewer than the global"):
        schedule.resolve_epochs(config, 3)


@pytest.mark.slow
def test_train_counts_epochs_on_the_opened_dataset(tmp_path, jax_env):
    """The tiny synthetic set has 8 records: 16 per batch is less than one epoch."""
    out = subprocess.run(
        [sys.executable, "-m", "asrth_jax.train", f"--config={TINY}",
         f"--workdir={tmp_path / 'w'}", "--config.train.num_steps=0",
         "--config.train.num_epochs=2", "--config.train.global_batch_size=16"],
        env=jax_env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert "8 training records are fewer than the global batch 16" in \
        out.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- pairs
class _Clips:
    """Videos named identity#clip, each `frames` frames of constant value (the index)."""

    def __init__(self, names, frames):
        self.names, self.frames = names, frames

    def __len__(self):
        return len(self.names)

    def num_frames(self, video):
        return self.frames

    def name(self, video):
        return self.names[video]

    def read_frames(self, video, frame_indices):
        return np.stack([np.full((2, 2, 3), i, np.uint8) for i in frame_indices])


def test_frames_drawn_with_replacement_and_sorted():
    source = PairSource(_Clips(["a"], 4), seed=0, num_repeats=4000)
    picks = np.array([source.pick(i)[1:] for i in range(len(source))])
    assert (picks[:, 0] <= picks[:, 1]).all()  # the earlier frame is the source
    # Two independent draws from 4 frames coincide with probability 1/4.
    assert abs(np.mean(picks[:, 0] == picks[:, 1]) - 0.25) < 0.03
    with pytest.raises(ValueError, match="video 'a' has no frames"):
        PairSource(_Clips(["a"], 0)).pick(0)


def test_each_epoch_visits_every_identity_num_repeats_times():
    names = ["a#1", "a#2", "a#3", "b#1", "c#1", "c#2"]
    source = PairSource(_Clips(names, 3), seed=0, num_repeats=5, id_sampling=True)
    assert len(source) == 3 * 5
    ids = [names[source.pick(i)[0]].split("#")[0] for i in range(len(source))]
    assert {k: ids.count(k) for k in "abc"} == {"a": 5, "b": 5, "c": 5}
    clips = {names[source.pick(i + e * len(source))[0]] for e in range(20) for i in (0, 3)}
    assert {"a#1", "a#2", "a#3"} <= clips  # one of the identity's videos, drawn anew


def _augment_config(flips: bool = True, **jitter):
    values = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    values.update(jitter)
    return ml_collections.ConfigDict(dict(flip=flips, time_flip=flips, **values))


def test_horizontal_flip_only_without_time_flip():
    rng = np.random.default_rng(0)
    src, drv = rng.integers(0, 255, (2, 4, 4, 3), dtype=np.uint8)
    record = {"source": src, "driving": drv, "frame_index": np.array([1, 2], np.int32)}
    augment = AugmentPair(_augment_config())
    swapped, mirrored = [], []
    for seed in range(4000):
        out = augment.random_map(record, np.random.default_rng(seed))
        swapped.append(out["frame_index"][0] == 2)
        mirrored.append(np.array_equal(out["source"], (drv if swapped[-1] else src)[:, ::-1]))
    swapped, mirrored = np.array(swapped), np.array(mirrored)
    assert not (swapped & mirrored).any()
    assert abs(swapped.mean() - 0.5) < 0.03 and abs(mirrored.mean() - 0.25) < 0.03


def test_colour_jitter_is_the_same_for_both_frames():
    frame = np.random.default_rng(1).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    record = {"source": frame, "driving": frame.copy()}
    augment = AugmentPair(_augment_config(flips=False, brightness=0.1, contrast=0.1,
                                          saturation=0.1, hue=0.1))
    for seed in range(10):
        out = augment.random_map(record, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["source"], out["driving"])
        assert not np.array_equal(out["source"], frame)


# ---------------------------------------------------------------- spectral norm
def _power_iterations(kernel, u, count):
    matrix = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1]).T
    u = np.asarray(u, np.float64)
    for _ in range(count):
        v = matrix.T @ u
        v /= np.linalg.norm(v)
        u = matrix @ v
        u /= np.linalg.norm(u)
    return u


@pytest.fixture(scope="module")
def one_step():
    """The tiny trainer's state before and after one jitted train step. Only the
    adversarial terms are on, and the generator's forward pass is a fixed blend of its
    inputs: the step then compiles in seconds, and the discriminator's passes in it are
    the real ones."""
    from flax import nnx

    from asrth_jax import sharding
    from asrth_jax.models.adasr import AdaSRGenerator, build_discriminator
    from asrth_jax.teachers import FrozenNetworks
    from asrth_jax.train_step import TrainSetup

    config = load_config_file(TINY)
    with config.unlocked():
        config.loss.perceptual_scales = ()
        config.loss.equivariance_value = config.loss.keypoint_prior = 0.0
        config.loss.headpose = config.loss.expression = config.loss.head_translation = 0.0
        config.loss.landmark_keypoints = config.loss.landmark_motion = 0.0
        config.train.global_batch_size = 2
    unused = FrozenNetworks(perceptual=nnx.Linear(1, 1, rngs=nnx.Rngs(0)), hopenet=None)
    trainer = TrainSetup(config, sharding.make_mesh(config.mesh, jax.devices()[:1]), unused)
    # Zeros for the (unused) generator side; a freshly initialised discriminator.
    before = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), trainer.abstract_state())
    _, disc_params, disc_rest = nnx.split(
        build_discriminator(config.model, seed=1), nnx.Param, ...)
    before = jax.device_get(before.replace(
        discriminator=before.discriminator.replace(params=disc_params, rest=disc_rest)))
    rng = np.random.default_rng(0)
    batch = {k: rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
             for k in ("source", "source_lq", "driving")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AdaSRGenerator, "head_poses", lambda self, *images: [None] * len(images))
        patch.setattr(AdaSRGenerator, "__call__", lambda self, source, driving, source_lq, poses:
                      {"prediction": 0.5 * driving + 0.5 * source_lq})
        after, _ = trainer.train_step(jax.device_put(before, trainer.state_sharding),
                                      trainer.shard_batch(batch), trainer.frozen_state)
    return trainer, before, jax.device_get(after)


@pytest.mark.slow
def test_discriminator_power_iteration_runs_four_times_per_step(one_step):
    """Two in the generator's pass (train mode there too), two in its own pass."""
    _, before, after = one_step
    disc_before = before.discriminator.params.to_pure_dict()
    rest_before, rest_after = (s.discriminator.rest.to_pure_dict() for s in (before, after))
    convs = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(
            rest_before, is_leaf=lambda x: isinstance(x, dict) and "u" in x):
        if not (isinstance(leaf, dict) and "u" in leaf):
            continue
        node_params, node_after = disc_before, rest_after
        for key in path:
            node_params, node_after = node_params[key.key], node_after[key.key]
        want = _power_iterations(node_params["kernel"], leaf["u"], 4)
        np.testing.assert_allclose(node_after["u"], want, atol=2e-5)
        if leaf["u"].size > 1:  # one output channel: u is +-1 after any iteration
            old = _power_iterations(node_params["kernel"], leaf["u"], 2)  # eval-mode G pass
            assert np.abs(old - want).max() > 1e-4
            convs += 1
    assert convs == 2


def test_discriminator_pass_sees_the_fake_batch_first(one_step, monkeypatch):
    from asrth_jax import train_step
    from asrth_jax.models import discriminator

    trainer, before, _ = one_step
    seen = []
    original = discriminator.MultiScaleDiscriminator.__call__

    def recording(self, image):
        seen.append(float(jnp.mean(image)))
        return original(self, image)

    monkeypatch.setattr(discriminator.MultiScaleDiscriminator, "__call__", recording)
    driving = jnp.zeros((1, 32, 32, 3))
    prediction = jnp.ones((1, 32, 32, 3))
    train_step.discriminator_loss(before.discriminator.params, before.discriminator.rest,
                                  driving, prediction, defs=trainer.defs)
    assert seen == [1.0, 0.0]
