"""The train loop end to end, in subprocesses (device counts are fixed at JAX start-up).

Every run shares one persistent compilation cache, so only the first run of each
device layout pays the XLA compile.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_helpers import CONFIG, EVERY, REPO, STEPS, assert_losses_equal

# Every step's losses are compared, so every step is logged whatever the config says;
# cross-device sums are added in device order, so 2 processes x 2 devices can be held to
# the bits of 1 process x 4 (test_train_sharding checks that mode against one device).
EVERY_STEP = "--config.log.scalars_every_steps=1"
DETERMINISTIC = "--config.mesh.deterministic_reductions=True"
# XLA:CPU splits large ops into max(NPROC or the core count, devices in the process)
# tasks, and split ops round differently: every layout compared gets the same split.
FOUR_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "NPROC": "4"}


def train_command(workdir: Path, *overrides: str, config: str = CONFIG) -> list[str]:
    return [sys.executable, "-m", "asrth_jax.train", f"--config={config}",
            f"--workdir={workdir}", EVERY_STEP, DETERMINISTIC, *overrides]


def read_metrics(workdir: Path) -> dict[int, dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["step"]: row for row in rows if "generator_total" in row}  # not eval rows


def finished_checkpoints(workdir: Path) -> list[int]:
    ckpt = workdir / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() \
        else []


def wait_for(predicate, process: subprocess.Popen, timeout: float = 400.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            raise AssertionError(f"process exited early with {process.returncode}: "
                                 f"{process.stderr.read() if process.stderr else ''}")
        time.sleep(0.2)
    process.kill()
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, jax_env):
    """Reference run: STEPS steps, one process with 4 CPU devices (the layout of the
    2-process x 2-device runs), checkpoints every EVERY steps."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(train_command(workdir, f"--config.train.num_steps={STEPS}",
                                 f"--config.checkpoint.every_steps={EVERY}"),
                   env=dict(jax_env, **FOUR_DEVICES),
                   check=True, capture_output=True, timeout=900)
    metrics = read_metrics(workdir)
    assert sorted(metrics) == list(range(1, STEPS + 1))
    return workdir, metrics


@pytest.mark.slow
def test_training_logs_scalars_images_and_checkpoints(uninterrupted):
    workdir, metrics = uninterrupted
    saved = sorted({*range(EVERY, STEPS + 1, EVERY), STEPS})
    assert finished_checkpoints(workdir) == saved[-3:]  # keep=3 (tiny: 6, 9, 10)
    assert all(np.isfinite(m["generator_total"]) for m in metrics.values())
    # the true pose and head centre teach the estimator (tiny config)
    assert metrics[1]["headpose"] > 0 and metrics[1]["head_translation"] > 0
    events = list(workdir.glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(events[0]), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "perceptual" in tags["scalars"] or "perceptual" in tags.get("tensors", [])
    assert tags["images"] or any("lq" in t for t in tags.get("tensors", []))


@pytest.mark.slow
def test_sigterm_leaves_a_checkpoint_of_the_step_it_was_on(uninterrupted, tmp_path,
                                                           jax_env):
    """SIGTERM is the TPU preemption notice: finish the step, checkpoint it, exit 0."""
    source, _ = uninterrupted
    workdir = tmp_path / "preempted"
    shutil.copytree(source, workdir)
    process = subprocess.Popen(
        train_command(workdir, "--config.train.num_steps=1000",
                      "--config.checkpoint.every_steps=1000"),
        env=dict(jax_env, **FOUR_DEVICES),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: max(read_metrics(workdir)) >= STEPS + 2, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 0
    last_logged = max(read_metrics(workdir))
    assert max(finished_checkpoints(workdir)) == last_logged >= STEPS + 2


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_killed_and_resumed_match_one_process(uninterrupted, tmp_path,
                                                            jax_env):
    """launch/local_multiprocess.sh: 2 processes x 2 CPU devices with gloo collectives,
    SIGKILLed between checkpoints, resumed across 2 processes: every step's losses equal
    the uninterrupted single-process 4-device run's, bit for bit."""
    _, reference = uninterrupted
    workdir = tmp_path / "two_procs"
    env = dict(jax_env, PYTHON=sys.executable, NPROC=FOUR_DEVICES["NPROC"])
    env.pop("XLA_FLAGS")

    def launch(num_steps: int) -> list[str]:
        return [str(REPO / "launch" / "local_multiprocess.sh"), "2", "--devices-per-process",
                "2", "--", f"--config={CONFIG}", f"--workdir={workdir}", EVERY_STEP, DETERMINISTIC,
                f"--config.checkpoint.every_steps={EVERY}",
                f"--config.train.num_steps={num_steps}"]

    process = subprocess.Popen(launch(1000), env=env, cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: EVERY + 1 in read_metrics(workdir)
             and EVERY in finished_checkpoints(workdir), process, timeout=800)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both trainers
    process.wait()
    before_kill = read_metrics(workdir)
    resumed_from = max(finished_checkpoints(workdir))
    assert resumed_from >= EVERY and max(before_kill) > resumed_from  # killed between saves
    assert resumed_from + 5 <= STEPS, "the reference run must cover the resumed steps"
    subprocess.run(launch(resumed_from + 5), env=env, check=True, capture_output=True,
                   timeout=900, cwd=REPO)
    metrics = read_metrics(workdir)  # resumed steps overwrite the killed run's lines
    assert set(range(1, resumed_from + 6)) <= set(metrics)
    # The resumed steps repeat the killed run's, and every step the one-process run's.
    for step in range(resumed_from + 1, max(before_kill) + 1):
        assert_losses_equal(metrics[step], before_kill[step], rtol=0)
    for step in range(1, resumed_from + 6):
        assert_losses_equal(metrics[step], reference[step], rtol=0)


def run_expecting_error(args: list[str], env: dict) -> str:
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    return out.stderr.strip().splitlines()[-1]


def test_missing_dataset_names_path_and_prepare_command(tmp_path, jax_env):
    missing = tmp_path / "no_such_dataset"
    # The teacher substitutes: a missing teacher file would be named before the data.
    line = run_expecting_error(train_command(tmp_path / "w", f"--config.data.tfds_dir={missing}",
                                             "--config.loss.perceptual_network=lpips_vgg16",
                                             "--config.loss.headpose=0",
                                             config=str(REPO / "configs" / "vox.py")), jax_env)
    assert str(missing) in line and "data_pipelines.prepare" in line


def test_batch_that_does_not_divide_names_both_numbers(tmp_path, jax_env):
    env = dict(jax_env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    line = run_expecting_error(train_command(tmp_path / "w", "--config.train.global_batch_size=6"),
                               env)
    assert "6" in line and "4 devices" in line


def test_unsupported_generator_depth_is_one_line(tmp_path, jax_env):
    line = run_expecting_error(
        train_command(tmp_path / "w", "--config.model.generator.num_down_blocks=0"), jax_env)
    assert "num_down_blocks must be at least 1" in line and "got 0" in line


def test_headpose_teacher_is_checked_against_the_data():
    from asrth_jax.config_lib import base_config
    from asrth_jax.teachers import check_headpose_teacher, headpose_weight

    loss = base_config().loss
    check_headpose_teacher(loss, "vox")  # the reference: HopeNet, whatever the data
    assert headpose_weight(loss, has_teacher=False) == 0.0
    loss.headpose_teacher = "data"
    check_headpose_teacher(loss, "synthetic")
    assert headpose_weight(loss, has_teacher=False) == loss.headpose
    with pytest.raises(ValueError, match="only data.kind='synthetic' has .got 'vox'"):
        check_headpose_teacher(loss, "vox")
    loss.headpose_teacher = "hopnet"
    with pytest.raises(ValueError, match="must be one of .*got 'hopnet'"):
        check_headpose_teacher(loss, "synthetic")
    loss.headpose_teacher = "hopenet"
    for term, truth in (("head_translation", "head centres"), ("landmark_keypoints", "landmarks"),
                        ("landmark_motion", "landmarks"), ("background_motion", "head masks")):
        loss[term] = 2.0
        check_headpose_teacher(loss, "synthetic")
        with pytest.raises(ValueError, match=f"{term}=2.0 needs true {truth}.*got 'vox'.*"
                                             f"{term}=0"):
            check_headpose_teacher(loss, "vox")
        loss[term] = 0.0


def test_deterministic_reductions_refuse_sharded_parameters():
    from asrth_jax.config_lib import base_config
    from asrth_jax.sharding import check_deterministic_reductions

    mesh = base_config().mesh
    mesh.deterministic_reductions = True
    check_deterministic_reductions(mesh)
    mesh.shard_params = True
    with pytest.raises(ValueError, match="needs replicated parameters: set config.mesh.shard"):
        check_deterministic_reductions(mesh)


def test_misspelt_config_key_is_one_line(tmp_path, jax_env):
    line = run_expecting_error(train_command(tmp_path / "w", "--config.train.nun_steps=3"),
                               jax_env)
    assert "nun_steps" in line


@pytest.mark.parametrize("degraded", [False, True])
def test_periodic_eval_encodes_the_clean_source_unless_asked(degraded):
    """The FOMM protocol (and `python -m asrth_jax.evaluate`) encode the clean frame 0."""
    from asrth_jax.config_lib import load_config_file
    from asrth_jax.train import eval_data_config
    from data_pipelines.pipeline import make_eval_dataset

    config = load_config_file(CONFIG)
    with config.unlocked():
        config.data.degradation.preset = "downsample"
        config.data.degradation.downsample.scale_range = (0.25, 0.5)
        config.eval.degraded_source = degraded
    batch = make_eval_dataset(eval_data_config(config), batch_size=2)[0]
    same = np.array_equal(batch["source_lq"], batch["source"])
    assert same != degraded
