"""What `train` does with damaged checkpoints, another model's workdir, a second
trainer, bad configs and workdirs, and a step too large for the device: in-process
on one CPU device with the tiny config (its compiles shared through a cache)."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest
from disk_helpers import small_tmpfs, try_mount_tmpfs, unmount
from test_checkpoints import largest_array_file, truncate
from test_train import read_metrics
from train_helpers import REPO, TINY, assert_losses_equal

from asrth_jax import config_lib, memory_fit, train
from asrth_jax import workdir as workdir_lib

STEPS = 3  # checkpoints at 2 and 3


def tiny_config(**model_common):
    config = config_lib.load_config_file(TINY)
    config.train.num_steps = STEPS
    config.checkpoint.every_steps = 2
    for key, value in model_common.items():
        config.model.common[key] = value
    return config


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """Every in-process run here compiles the same programs: compile them once."""
    from jax._src import compilation_cache

    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, compile_cache):
    """An uninterrupted run of STEPS steps."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    train.train_and_evaluate(tiny_config(), str(workdir))
    metrics = read_metrics(workdir)
    assert sorted(metrics) == list(range(1, STEPS + 1))
    return workdir, metrics


def steps_on_disk(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name[0].isdigit())


@pytest.mark.slow
def test_damaged_latest_checkpoint_resumes_from_the_previous_one(reference, tmp_path, caplog):
    """Must-show: step 3 damaged -> one log line, resume from 2, and step 3 again has
    the uninterrupted run's losses; the damaged folder is kept."""
    source, ref_metrics = reference
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    truncate(largest_array_file(workdir / "checkpoints" / str(STEPS)))
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(tiny_config(), str(workdir))
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 1 and "\n" not in damaged[0], damaged
    assert f"step {STEPS} in" in damaged[0] and "resuming from step 2" in damaged[0]
    assert steps_on_disk(workdir) == ["2", "3", "3.damaged"]  # kept, and 3 saved anew
    resumed = read_metrics(workdir)[STEPS]  # the resumed run's line comes last
    assert_losses_equal(resumed, ref_metrics[STEPS], rtol=0)


def test_truncated_metadata_is_damage_not_another_model(reference, tmp_path, caplog):
    """Orbax reads a truncated _METADATA as an empty tree: still damage (restore only)."""
    from asrth_jax import checkpoints, sharding
    from asrth_jax.train_step import TrainSetup
    from data_pipelines.pipeline import make_train_loader

    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)
    truncate(workdir / "checkpoints" / str(STEPS) / "models" / "_METADATA")
    config = tiny_config()
    trainer = TrainSetup(config, sharding.make_mesh(config.mesh))
    loader = make_train_loader(config.data, seed=0, global_batch_size=8)
    checkpointer = checkpoints.TrainCheckpointer(
        str(workdir), config.checkpoint.keep, trainer.abstract_state(with_shardings=True),
        loader)
    try:
        with caplog.at_level(logging.WARNING):
            step, state = checkpointer.restore_newest_intact()
    finally:
        checkpointer.close()
    assert step == 2 and int(state.step) == 2
    assert any("step 3 in" in r.getMessage() and "_METADATA" in r.getMessage()
               for r in caplog.records)
    assert steps_on_disk(workdir) == ["2", "3.damaged"]


def test_workdir_of_another_model_is_one_line(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)
    with pytest.raises(train.StopTraining) as err:
        train.train_and_evaluate(tiny_config(num_kp=6), str(workdir))
    message = str(err.value)
    assert "\n" not in message and "holds checkpoints of another model" in message
    assert "arrays differ in shape" in message
    assert "saved" in message and "vs configured" in message
    assert steps_on_disk(workdir) == ["2", "3"]  # nothing renamed: not damage


def test_second_trainer_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom asrth_jax.workdir import exclusive\n"
         f"with exclusive({str(workdir)!r}, 0):\n    print('locked', flush=True)\n"
         "    time.sleep(120)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(train.StopTraining, match="another trainer .pid [0-9]+. is using"):
            train.train_and_evaluate(tiny_config(), str(workdir))
        with workdir_lib.exclusive(str(workdir), 1):  # process 1 of the same run: allowed
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdir_lib.exclusive(str(workdir), 0):  # kill -9 left nothing stuck
        pass


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    """Must-show (issue 28): `WORKDIR/.train.lock.0` a symlink (or a hard link) to a
    user's file: the trainer refuses in one line and the file keeps its bytes."""
    users = tmp_path / "notes.txt"
    users.write_text("the user's notes")
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / ".train.lock.0").symlink_to(users)
    with pytest.raises(train.StopTraining) as err:
        train.train_and_evaluate(tiny_config(), str(workdir))
    assert "\n" not in str(err.value) and "is a symbolic link" in str(err.value)
    assert users.read_text() == "the user's notes"
    assert not (workdir / "checkpoints").exists()
    (workdir / ".train.lock.1").hardlink_to(users)
    with pytest.raises(workdir_lib.WorkdirError, match="has other hard links"), \
            workdir_lib.exclusive(str(workdir), 1):
        pass
    assert users.read_text() == "the user's notes"


def test_config_and_workdir_are_checked_before_anything_is_created(tmp_path):
    config = tiny_config()
    config.optim.decay_milestones = ("abc",)  # what --config.optim.decay_milestones=abc gives
    workdir = tmp_path / "new_run"
    with pytest.raises(train.StopTraining, match="config.optim.decay_milestones must be"):
        train.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(train.StopTraining, match="is a file, not a directory"):
        train.train_and_evaluate(tiny_config(), str(a_file))
    with pytest.raises(train.StopTraining, match="is not writable"):
        train.train_and_evaluate(tiny_config(), "/proc/asrth_run")


def test_config_path_problems_are_one_line(tmp_path):
    text = tmp_path / "config.txt"
    text.write_text("def get_config():\n    pass\n")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    for path, expected in ((tmp_path / "missing.py", "does not exist"),
                           (text, "is not a .py file"), (empty, "defines no get_config()")):
        with pytest.raises(config_lib.ConfigError, match=expected):  # typed, not an exit
            config_lib.load_config_file(str(path))
    out = subprocess.run([sys.executable, "-m", "asrth_jax.train", f"--config={text}",
                          f"--workdir={tmp_path / 'w'}"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: config {text} is not a .py file; pass a config such as configs/vox.py")


def test_step_too_large_for_the_device_is_refused_before_the_first_step(
        tmp_path, monkeypatch, compile_cache):
    monkeypatch.setattr(memory_fit, "device_capacity_bytes",
                        lambda device: (1024 ** 2, "pretend limit"))
    workdir = tmp_path / "run"
    with pytest.raises(train.StopTraining) as err:
        train.train_and_evaluate(tiny_config(), str(workdir))
    message = str(err.value)
    assert "\n" not in message and "XLA's memory plan" in message, message
    assert "but the device has 1.0 MiB (pretend limit)" in message
    for knob in ("global_batch_size (now 8)", "remat=True", "compute_dtype=bfloat16",
                 "shard_params=True"):
        assert knob in message
    assert read_metrics(workdir) == {} and not steps_on_disk(workdir)


@pytest.fixture
def disk_full_from_step_4(tmp_path, monkeypatch):
    """A workdir whose disk fills up just before the checkpoint of step 4: a real 32 MiB
    tmpfs filled to its last 200 kB (root), or else a simulated full disk (the
    background write of the data item raises ENOSPC). Yields the workdir."""
    import errno
    import os

    from asrth_jax import checkpoints

    disk = tmp_path / "disk"
    real = try_mount_tmpfs(disk, "size=32m")
    save = checkpoints.TrainCheckpointer.save

    def filling_save(self, step, state):
        if step == 4 and real:
            self.manager.wait_until_finished()  # step 2 is whole before the disk fills
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            (disk / "filler").write_bytes(b"\0" * max(0, free - 200_000))
        save(self, step, state)
        # The background write ends (here: fails) before step 5: the trainer must then
        # stop at its next step, whatever the machine's speed.
        while self.manager.is_saving_in_progress():
            time.sleep(0.05)

    monkeypatch.setattr(checkpoints.TrainCheckpointer, "save", filling_save)
    if not real:
        from grain._src.python.checkpoint import handler

        write = handler.CheckpointHandler.save

        def full_disk_write(self, directory, *args, **kwargs):
            if epath_name(directory).startswith("4."):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write(self, directory, *args, **kwargs)

        monkeypatch.setattr(handler.CheckpointHandler, "save", full_disk_write)
    try:
        yield disk / "run"
    finally:
        if real:
            unmount(disk)


def epath_name(directory) -> str:
    """The step folder's name of an item folder Orbax writes to (`4.orbax-...tmp/data`)."""
    return Path(str(directory)).parent.name


@pytest.mark.slow
def test_a_failed_checkpoint_save_stops_training_at_once(disk_full_from_step_4,
                                                         compile_cache):
    """Must-show (issue 28): the disk fills before the step-4 save: training stops at
    that save in one line naming step 2 as the last good checkpoint, instead of
    training on (work that could not be saved) and dying later with a traceback."""
    workdir = disk_full_from_step_4
    config = tiny_config()
    config.train.num_steps = 12
    with pytest.raises(train.StopTraining) as err:
        train.train_and_evaluate(config, str(workdir))
    message = str(err.value)
    assert "\n" not in message, message
    assert "saving checkpoint step 4" in message and "No space left on device" in message
    assert "the last good checkpoint is step 2" in message
    assert max(read_metrics(workdir)) == 4  # stopped at once, not at the next save (6)
    # Step 2 is kept; of step 4 only Orbax's unfinished temporary folder.
    assert [name for name in steps_on_disk(workdir) if name.isdigit()] == ["2"]


@pytest.mark.slow
def test_a_full_disk_ends_the_train_command_with_one_line_and_no_traceback(tmp_path):
    """The CLI view of the must-show: `python -m asrth_jax.train` on a 32 MiB tmpfs that
    fills once step 2 is saved ends with the trainer's one line and prints no traceback
    (the libraries' background threads printed ~900 before). Needs root."""
    import json
    import os

    workdir = tmp_path / "disk" / "run"
    stderr_path = tmp_path / "stderr.txt"
    with small_tmpfs(tmp_path / "disk", "size=32m") as disk:
        with open(stderr_path, "w") as stderr:  # a pipe left unread would block the run
            proc = subprocess.Popen(
                [sys.executable, "-m", "asrth_jax.train", f"--config={TINY}",
                 f"--workdir={workdir}", "--config.train.num_steps=12",
                 "--config.checkpoint.every_steps=2"],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
            deadline = time.monotonic() + 600
            while proc.poll() is None and time.monotonic() < deadline:
                if (workdir / "checkpoints" / "2").is_dir():
                    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
                    (disk / "filler").write_bytes(b"\0" * max(0, free - 200_000))
                    break
                time.sleep(0.05)
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        lines = stderr_path.read_text().strip().splitlines()
        assert proc.returncode == 1 and "Traceback" not in "\n".join(lines)
        assert lines[-1].startswith("error: saving checkpoint step ")
        assert "(No space left on device)" in lines[-1]
        assert lines[-1].endswith("the last good checkpoint is step 2 (the same command "
                                  "resumes from it)")
        logged = [json.loads(line)["step"]
                  for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        failed = int(lines[-1].split("step ")[1].split()[0])
        assert max(logged) <= failed + 1  # stopped within a step of the failed save


def test_the_error_line_stays_last_when_a_library_leaves_a_coroutine_unawaited(tmp_path):
    """A full disk leaves Orbax's write coroutines unawaited; Python warned about each at
    exit (a RuntimeWarning and a tracemalloc hint), after the trainer's one-line error,
    which CI once read as the last line. The same exit, without a disk to fill."""
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        "from absl import app\n"
        "from asrth_jax import errors, train\n"
        "pending = []\n"
        "async def write_metadata():\n"
        "    pass\n"
        "def failing_run(config, workdir):\n"
        "    pending.append(write_metadata())\n"
        "    raise errors.AsrthError('saving checkpoint step 2 failed: disk full')\n"
        "train.train_and_evaluate = failing_run\n"
        "app.run(train.main, flags_parser=train.parse_flags)\n")
    proc = subprocess.run(
        [sys.executable, str(script), f"--config={TINY}", f"--workdir={tmp_path / 'run'}",
         "--nocompile_cache"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert lines[-1] == "error: saving checkpoint step 2 failed: disk full", proc.stderr
    assert "never awaited" not in proc.stderr
