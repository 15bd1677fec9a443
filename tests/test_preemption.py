"""Preemption agreed across processes (`asrth_jax.preemption`): with two training
processes on the default reduction path, SIGTERM sent to ONE of them stops both at the
same step with one checkpoint, and the resumed run continues exactly as an uninterrupted
one (every logged value equal)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import finished_checkpoints, read_metrics
from train_helpers import CONFIG, REPO

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]
STEPS = 12
TIMINGS = ("step_time_s", "pairs_per_s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir: Path, num_steps: int, env: dict) -> list[subprocess.Popen]:
    """Two trainer processes, one CPU device each, gloo collectives, default reductions."""
    env = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, "-m", "asrth_jax.train", f"--config={CONFIG}", f"--workdir={workdir}",
         "--config.log.scalars_every_steps=1", "--config.checkpoint.every_steps=1000",
         f"--config.train.num_steps={num_steps}", "--config.cpu_collectives=gloo",
         "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
         "--process_id", str(index)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for index in range(2)]


def _wait(processes: list[subprocess.Popen], timeout: float = 900) -> None:
    deadline = time.time() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise AssertionError("the processes did not stop (a save on mismatched steps "
                                 "hangs)") from None
        assert process.returncode == 0, process.stderr.read()[-2000:]


def _values(metrics: dict[int, dict]) -> dict[int, dict]:
    return {step: {k: v for k, v in row.items() if k not in TIMINGS}
            for step, row in metrics.items()}


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes_exactly(tmp_path,
                                                                           jax_env):
    reference = tmp_path / "uninterrupted"
    _wait(_launch(reference, STEPS, jax_env))
    expected = _values(read_metrics(reference))
    assert sorted(expected) == list(range(1, STEPS + 1))

    workdir = tmp_path / "preempted"
    processes = _launch(workdir, 1000, jax_env)
    deadline = time.time() + 900
    while max(read_metrics(workdir), default=0) < 3:
        assert time.time() < deadline and all(p.poll() is None for p in processes), \
            "training did not reach step 3"
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGTERM)  # the non-chief only
    _wait(processes)
    saved = finished_checkpoints(workdir)
    assert len(saved) == 1, saved
    stopped_at = saved[0]
    assert max(read_metrics(workdir)) == stopped_at < STEPS

    _wait(_launch(workdir, STEPS, jax_env))
    assert _values(read_metrics(workdir)) == expected
