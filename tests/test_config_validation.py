"""Issue 28: a config is checked whole before anything starts: keys set inside a config
file before it is locked, wrongly typed or non-finite values, negative loss weights,
an unknown data kind, a get_config of the wrong type, and teachers whose weight is 0."""

from __future__ import annotations

import math

import numpy as np
import pytest
from train_helpers import REPO, TINY

from asrth_jax import config_lib, teachers, train


def _config_file(folder, body: str, name: str = "cfg.py"):
    path = folder / name
    path.write_text("from asrth_jax import config_lib\n\n\ndef get_config():\n"
                    + "".join(f"    {line}\n" for line in body.splitlines()))
    return path


@pytest.mark.parametrize("line, named, nearest", [
    ("c.optim.learning_rate = 5.0", "config.optim.learning_rate", "config.optim.lr"),
    ("c.train.nun_steps = 3", "config.train.nun_steps", "config.train.num_steps"),
    ("c.train.lr = 1e-3", "config.train.lr", "config.optim.lr"),
    ("c.loss.headpos = 0.0", "config.loss.headpos", "config.loss.headpose"),
])
def test_a_key_set_before_the_lock_is_refused_naming_the_nearest(tmp_path, line, named,
                                                                 nearest):
    """Must-show: a misspelt key set in a config file before `finalize` locks it was a
    new knob nothing reads (training ran at the default lr); now one line naming the
    key and the nearest known one."""
    path = _config_file(tmp_path, f"c = config_lib.base_config()\n{line}\n"
                                  "return config_lib.finalize(c)")
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.load_config_file(str(path))
    message = str(err.value)
    assert "\n" not in message and "is not a config key" in message
    assert f"{named} is not a config key" in message and f"did you mean {nearest}?" in message


@pytest.mark.parametrize("body, expected", [
    ("return {'optim': {'lr': 1.0}}", "get_config() returned a dict, not a ConfigDict"),
    ("return None", "get_config() returned a NoneType"),
    ("c = config_lib.base_config()\nc.optim.lr = 'fast'\nreturn c",
     "line 6: TypeError"),
    ("c = config_lib.base_config()\nreturn undefined_name", "NameError"),
])
def test_a_config_file_that_gives_no_usable_config_is_one_line(tmp_path, body, expected):
    path = _config_file(tmp_path, body)
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.load_config_file(str(path))
    assert "\n" not in str(err.value) and expected in str(err.value), str(err.value)


def _set(config, dotted: str, value) -> None:
    section, _, key = dotted.rpartition(".")
    node = config
    for part in section.split("."):
        node = node[part]
    with node.ignore_type():
        node[key] = value


@pytest.mark.parametrize("key, value, expected", [
    ("optim.lr", math.nan, "config.optim.lr must be a finite number"),
    ("optim.lr", math.inf, "config.optim.lr must be a finite number"),
    ("optim.lr", -1e-3, "config.optim.lr must be a positive number"),
    ("loss.headpose", -20.0, "config.loss.headpose must be >= 0"),
    ("loss.perceptual", (10.0, -10.0, 10.0, 10.0, 10.0), "config.loss.perceptual must be >= 0"),
    ("loss.generator_gan", "1", "config.loss.generator_gan must be a number"),
    ("optim.b1", 1.5, "config.optim.b1 must be in [0, 1)"),
    ("train.remat", "yes", "config.train.remat must be True or False"),
    ("data.kind", "voxceleb", "config.data.kind must be one of"),
    ("loss.perceptual_scales", (1.0, 0.0), "config.loss.perceptual_scales must be in (0, 1]"),
])
def test_bad_values_stop_training_in_one_line_before_the_lock(tmp_path, key, value,
                                                              expected):
    """Each was a traceback hundreds of lines later (nan/inf lr, an unknown data kind
    after the lock was taken) or trained silently (negative weights)."""
    config = config_lib.load_config_file(TINY)
    _set(config, key, value)
    workdir = tmp_path / "run"
    with pytest.raises(train.StopTraining) as err:
        train.train_and_evaluate(config, str(workdir))
    assert "\n" not in str(err.value) and expected in str(err.value), str(err.value)
    assert not workdir.exists()  # refused before the workdir (and its lock) is made


def test_every_shipped_config_passes(monkeypatch):
    """Every check of the one entry point but whether the teachers' weight files (made
    by the user with `asrth_jax.convert`) are present on this machine."""
    monkeypatch.setattr(teachers, "check_teacher_files", lambda loss: None)
    for path in sorted((REPO / "configs").glob("*.py")) + [REPO / TINY]:
        config = config_lib.load_config_file(str(path))
        config_lib.validate(config)


def _paper_config(**loss):
    config = config_lib.load_config_file(str(REPO / "configs" / "vox.py"))
    for key, value in loss.items():
        config.loss[key] = value
    return config


def test_a_teacher_whose_weight_is_0_is_not_loaded(tmp_path, monkeypatch):
    """Must-show: the paper config with `--config.loss.headpose=0` (launch/README.md)
    needs no `weights/hopenet.npz`; a perceptual term of weight 0 needs no VGG19 file."""
    monkeypatch.chdir(tmp_path)  # neither weights/vgg19.npz nor weights/hopenet.npz here
    config = _paper_config(headpose=0.0, perceptual_network="lpips_vgg16")
    teachers.check_teachers(config.loss, config.data.kind)
    frozen = teachers.FrozenNetworks.from_config(config.loss)
    assert frozen.hopenet is None
    config = _paper_config(headpose=0.0, perceptual=(0.0,) * 5)
    frozen = teachers.FrozenNetworks.from_config(config.loss)
    assert frozen.hopenet is None and frozen.perceptual is not None
    with pytest.raises(config_lib.ConfigError, match="hopenet_weights, which names"):
        teachers.check_teacher_files(_paper_config(perceptual=(0.0,) * 5).loss)


@pytest.mark.parametrize("content, expected", [
    ("pickled", "holds Python objects, not weights"),
    ("text", "is not a .npz weights file"),
])
def test_a_bad_teacher_file_is_one_line_before_the_lock(tmp_path, content, expected):
    bad = tmp_path / "vgg19.npz"
    if content == "pickled":
        np.savez(bad, kernel=np.array([{"a": 1}], dtype=object))
    else:
        bad.write_text("not weights")
    config = config_lib.load_config_file(TINY)
    config.loss.perceptual_network = "vgg19"
    config.loss.vgg19_weights = str(bad)
    workdir = tmp_path / "run"
    with pytest.raises(train.StopTraining) as err:
        train.train_and_evaluate(config, str(workdir))
    message = str(err.value)
    assert "\n" not in message and expected in message and "allow_pickle" not in message
    assert "python -m asrth_jax.convert --vgg19" in message
    assert not workdir.exists()


def test_train_names_the_nearest_key_in_one_line(tmp_path):
    """Must-show, from the command line: `c.optim.learning_rate = 5.0` inside a config
    file (before `finalize`) trained at the default lr; now exit 2 and one line."""
    import subprocess
    import sys

    path = _config_file(tmp_path, "c = config_lib.base_config()\n"
                                  "c.optim.learning_rate = 5.0\nreturn config_lib.finalize(c)")
    out = subprocess.run([sys.executable, "-m", "asrth_jax.train", f"--config={path}",
                          f"--workdir={tmp_path / 'w'}"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: config file {path}: config.optim.learning_rate is not a config key; did you "
        "mean config.optim.lr? (the keys are those of asrth_jax/config_lib.py base_config())"]
    assert not (tmp_path / "w").exists()


def test_a_perceptual_level_too_small_for_the_vgg_trunk_is_refused_with_the_scales_that_fit():
    """At 64 px the paper's 0.125 level is 8 px; the fifth VGG layer (after four 2x2
    pools) had no pixels and the loss was NaN at the first step of a real-face run."""
    config = config_lib.load_config_file(str(REPO / "configs" / "real_small.py"))
    config.loss.perceptual_scales = (1.0, 0.5, 0.25, 0.125)
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.validate(config)
    assert "8 px level" in str(err.value) and "(1.0, 0.5, 0.25)" in str(err.value)
    config.loss.perceptual = (10.0, 10.0, 10.0, 10.0, 0.0)  # layer 4 needs 8 px: fits
    config_lib.validate(config)
    config.loss.perceptual = (10.0,) * 5
    config.loss.perceptual_scales = (1.0, 0.5, 0.25)
    config_lib.validate(config)
