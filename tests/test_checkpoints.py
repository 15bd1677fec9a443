"""Checkpoint folders as users name them, damaged steps and other models' steps."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from test_inference import randomize
from tiny_train_config import TEST_MODEL

from asrth_jax import checkpoints, config_lib, model_loading
from asrth_jax.models import adasr


def _models(num_kp: int = 4, seed: int = 0):
    model = config_lib.model_config(TEST_MODEL)
    model.common.num_kp = num_kp
    gen = randomize(adasr.abstract_generator(model), seed)
    disc = randomize(adasr.abstract_discriminator(model), seed + 1)
    return model, gen, disc


def _kernels(module: nnx.Module) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(nnx.state(module)))]


def truncate(path: Path, size: int = 10) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def largest_array_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "models").rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A training workdir's layout: steps 1 and 2 (other weights) under checkpoints/."""
    root = tmp_path_factory.mktemp("ckpt") / "run"
    model, gen1, disc1 = _models(seed=0)
    _, gen2, disc2 = _models(seed=10)
    checkpoints.save_models(str(root / "checkpoints"), gen1, disc1, step=1)
    checkpoints.save_models(str(root / "checkpoints"), gen2, disc2, step=2)
    return {"root": root, "model": model, "gen1": gen1, "gen2": gen2}


def _restore(path: Path, model) -> tuple[int, nnx.Module]:
    gen = adasr.abstract_generator(model)
    return checkpoints.restore_models(str(path), gen), gen


def test_workdir_checkpoints_folder_and_step_folder_all_load(run):
    """README: `animate --checkpoint runs/vox` where training wrote runs/vox/checkpoints."""
    root = run["root"]
    for path in (root, root / "checkpoints"):
        step, gen = _restore(path, run["model"])
        assert step == 2
        np.testing.assert_array_equal(_kernels(gen)[0], _kernels(run["gen2"])[0])
    step, gen = _restore(root / "checkpoints" / "1", run["model"])
    assert step == 1
    for got, want in zip(_kernels(gen), _kernels(run["gen1"]), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("damage", ["array_file", "_METADATA"])
def test_damaged_latest_step_names_it_and_the_steps_that_load(run, tmp_path, damage):
    root = tmp_path / "run"
    shutil.copytree(run["root"], root)
    step_dir = root / "checkpoints" / "2"
    truncate(largest_array_file(step_dir) if damage == "array_file"
             else step_dir / "models" / "_METADATA")
    with pytest.raises(checkpoints.DamagedCheckpointError) as err:
        _restore(root, run["model"])
    message = str(err.value)
    assert "\n" not in message and len(message) < 600, message
    assert "checkpoint step 2" in message and "steps that load: [1]" in message
    assert f"--checkpoint {root / 'checkpoints' / '1'}" in message
    # animate/evaluate load through inference: the same one line, not a "mismatch"
    config = ml_collections.ConfigDict({"model": run["model"], "image_size": 32})
    with pytest.raises(model_loading.ModelLoadError, match="checkpoint step 2 .* is damaged"):
        model_loading.load_generator_side(config, checkpoint=str(root))
    assert step_dir.is_dir()  # kept
    step, _ = _restore(root / "checkpoints" / "1", run["model"])  # the way out it names
    assert step == 1


def test_step_of_another_model_names_the_arrays_that_differ(run):
    _, gen, disc = _models(num_kp=5)
    with pytest.raises(checkpoints.ModelMismatchError) as err:
        checkpoints.restore_models(str(run["root"]), gen, disc)
    message = str(err.value)
    assert "\n" not in message and "belongs to another model" in message
    assert "arrays differ in shape" in message and "vs configured" in message
    count = int(message.split("(")[1].split(" arrays differ")[0])
    assert count >= 2  # keypoint heads of the detector and the pose estimator
