"""Benchmark and model-summary CLIs on CPU with the tiny test config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from asrth_jax import benchmark, memory_fit
from asrth_jax.models import summary

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "tiny_train_config.py")


def test_peak_table_knows_accelerators_and_not_cpu():
    h100 = SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
    assert benchmark.device_peak_flops(h100, "bfloat16") == 989e12
    assert benchmark.device_peak_flops(SimpleNamespace(device_kind="TPU v5p"), "bfloat16")
    assert benchmark.device_peak_flops(SimpleNamespace(device_kind="cpu"), "float32") is None


@pytest.mark.slow
def test_inference_benchmark_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(["--config", TINY, "--batch", "2", "--steps", "1",
                           "--inference-only", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["inference_s_per_frame"] > 0
    assert result["inference_flops_per_frame"] > 0
    assert result["batch"] == 2 and result["dtype"] == "float32"
    assert result["phase"] == "done" and list(result["inference_by_batch"]) == ["2"]
    assert "inference_frames_per_s" in capsys.readouterr().out


@pytest.mark.slow
def test_inference_benchmark_measures_each_batch_in_turn(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(["--config", TINY, "--steps", "1",
                           "--inference-only", "--inference-batches", "2,1",
                           "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["phase"] == "done" and result["batch"] == 2
    assert list(result["inference_by_batch"]) == ["2", "1"]
    for figures in result["inference_by_batch"].values():
        assert figures["inference_s_per_frame"] > 0 and figures["inference_flops_per_frame"] > 0
        assert figures["inference_first_frame_since_process_start_s"] >= \
            figures["inference_first_frame_s"] > 0
    # The first batch's figures are also the flat keys.
    assert result["inference_batch"] == 2
    assert result["inference_s_per_frame"] == \
        result["inference_by_batch"]["2"]["inference_s_per_frame"]
    assert result["batch"] == 2 and result["dtype"] == "float32"
    assert "inference_frames_per_s" in capsys.readouterr().out


def test_inference_batches_go_with_inference_only():
    with pytest.raises(SystemExit, match="--inference-batches goes with --inference-only"):
        benchmark.main(["--config", TINY, "--inference-batches", "1,8"])
    with pytest.raises(SystemExit, match="--config is required"):
        benchmark.main(["--batch", "2"])


def test_xla_flag_settings_record_the_autotune_level():
    assert benchmark.xla_flag_settings("") == {"xla_flags": "",
                                               "xla_gpu_autotune_level": None}
    flags = "--xla_gpu_autotune_level=4 --xla_dump_to=x --xla_gpu_autotune_level=0"
    assert benchmark.xla_flag_settings(flags)["xla_gpu_autotune_level"] == 0  # last wins


def test_matmul_only_reports_the_rate_reached(tmp_path):
    out = tmp_path / "matmul.json"
    assert benchmark.main(["--matmul-only", "--matmul-size", "128", "--matmul-dtype",
                           "float32", "--steps", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["phase"] == "done" and result["matmul_size"] == 128
    assert result["matmul_flops_per_s"] == pytest.approx(
        2 * 128 ** 3 * result["matmul_chain"] / result["matmul_s"])
    assert result["peak_flops_per_device"] is None  # CPU: no datasheet figure
    assert "xla_gpu_autotune_level" in result
    with pytest.raises(SystemExit, match="--matmul-only runs alone"):
        benchmark.main(["--matmul-only", "--config", TINY])


@pytest.mark.slow
def test_benchmark_out_is_rewritten_after_each_phase_and_survives_a_cut(tmp_path):
    """A run killed (as `timeout` does) after the trainer is initialised leaves a whole
    JSON with what it measured so far."""
    import os
    import signal
    import time

    out = tmp_path / "cut.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_gpu_autotune_level=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "asrth_jax.benchmark", "--config", TINY,
                             "--batch", "2", "--skip-inference", "--no-compile-cache",
                             "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and "init_state_s" in json.loads(out.read_text()):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads(out.read_text())
    assert result["init_state_s"] > 0 and result["phase"] in ("init", "compiled")
    assert "train_step_s" not in result
    assert result["xla_gpu_autotune_level"] == 2 and result["config_image_size"] == 32
    assert not [p.name for p in tmp_path.iterdir() if p.name != "cut.json"]  # no leftovers


class _FakeCompiled:
    """A compiled train step whose XLA plan grows 1000 temporary bytes per example."""

    def __init__(self, batch: int):
        self.batch = batch

    def memory_analysis(self):
        return SimpleNamespace(argument_size_in_bytes=10_000, output_size_in_bytes=10_000,
                               alias_size_in_bytes=10_000, temp_size_in_bytes=1_000 * self.batch,
                               generated_code_size_in_bytes=0)

    def cost_analysis(self):
        return {"flops": 1.0}

    def as_text(self):
        return ("HloModule fake\n\nENTRY %main (p: f32[]) -> f32[] {\n"
                "  ROOT %p = f32[] parameter(0)\n}\n")


class _FakeTrainer:
    def __init__(self, config, mesh, frozen):
        self.defs = SimpleNamespace(pose_from_data=False)
        self.frozen_state = None
        self.train_step = SimpleNamespace(lower=lambda state, data, frozen: SimpleNamespace(
            compile=lambda: _FakeCompiled(data["source"].shape[0])))

    def init_state(self, seed):
        return np.zeros(())

    def shard_batch(self, local):
        return local


@pytest.mark.parametrize("earlier", [False, True])
def test_largest_batch_sized_from_an_earlier_plan_skips_the_probe(monkeypatch, tmp_path,
                                                                   earlier):
    from asrth_jax import train_step
    from asrth_jax.config_lib import load_config_file

    monkeypatch.setattr(train_step, "TrainSetup", _FakeTrainer)
    monkeypatch.setattr(memory_fit, "memory_limit_bytes", lambda device: 100_000)
    plan_file = tmp_path / "b4.json"
    plan_file.write_text(json.dumps({
        "batch": 4, "train_argument_size_in_bytes": 10_000, "train_output_size_in_bytes": 10_000,
        "train_alias_size_in_bytes": 10_000, "train_temp_size_in_bytes": 4_000, "phase": "done"}))
    phases = []
    result = benchmark.benchmark_train(
        load_config_file(TINY), 0, 1, random_perceptual=False, compile_only=True,
        probe_plan=benchmark.earlier_plan(str(plan_file)) if earlier else None,
        record=lambda phase, values: phases.append((phase, dict(values))))
    # 90% of 100_000 less 10_000 fixed, at 1_000 bytes an example: 80.
    assert result["batch"] == 80
    assert [c["batch"] for c in result["train_compiles"]] == ([80] if earlier else [4, 80])
    assert [p for p, _ in phases] == ["init"] + ["compiled"] * (2 if earlier else 3)
    assert phases[0][1] == {"init_state_s": phases[0][1]["init_state_s"]}


def test_earlier_plan_without_one_means_a_probe(tmp_path):
    assert benchmark.earlier_plan(str(tmp_path / "absent.json")) is None
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps({"phase": "init", "batch": 32, "init_state_s": 3.0}))
    assert benchmark.earlier_plan(str(cut)) is None
    assert benchmark.earlier_plan(None) is None


def test_random_train_batch_feeds_the_teachers_that_are_on():
    import numpy as np

    rng = np.random.default_rng(0)
    plain = benchmark.random_train_batch(rng, 2, 32, pose=False, centre=False)
    assert sorted(plain) == ["driving", "source", "source_lq"]
    assert plain["driving"].shape == (2, 32, 32, 3) and plain["driving"].dtype == np.float32
    every = benchmark.random_train_batch(rng, 2, 32, pose=True, centre=True, landmarks=True)
    assert every["driving_pose"].shape == (2, 3) and np.abs(every["driving_pose"]).max() <= 30
    assert every["driving_centre"].shape == (2, 2) and \
        np.abs(every["driving_centre"]).max() <= 0.2
    lms = every["driving_landmarks"]
    assert lms.shape == (2, 13, 2) and lms.dtype == np.float32 and 0 <= lms.min() <= lms.max() <= 31
    assert "source_landmarks" not in every
    both = benchmark.random_train_batch(rng, 2, 32, pose=False, centre=False, landmarks=True,
                                        source_landmarks=True)
    assert both["source_landmarks"].shape == (2, 13, 2)
    assert 0 <= both["source_landmarks"].min() <= both["source_landmarks"].max() <= 31
    assert "moving_mask" not in both
    masked = benchmark.random_train_batch(rng, 2, 32, pose=False, centre=False,
                                          moving_mask=True)
    assert masked["moving_mask"].shape == (2, 32, 32) and masked["moving_mask"].dtype == bool


@pytest.mark.slow
def test_summary_counts_and_flops():
    from asrth_jax.config_lib import load_config_file

    result = summary.summarize(load_config_file(TINY))
    assert result["parameters_total"] == sum(result["parameters"].values()) > 0
    assert result["inference_gflops_per_frame"] > 0


def test_summary_rejects_a_bad_image_size_in_one_line():
    out = subprocess.run([sys.executable, "-m", "asrth_jax.models.summary", "--config", TINY,
                          "--image-size", "50"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "error: image size 50x50 is not a multiple of 32; resize to the config's image_size "
        "(e.g. 256)"]


@pytest.mark.parametrize("flag", ["--dtype=float16"])
def test_benchmark_rejects_unknown_dtype(flag):
    with pytest.raises(SystemExit):
        benchmark.main(["--config", TINY, flag])


def test_largest_fitting_batch_scales_temporaries_only():
    plan = {"train_argument_size_in_bytes": 10_000, "train_output_size_in_bytes": 10_000,
            "train_alias_size_in_bytes": 10_000, "train_temp_size_in_bytes": 4 * 1_000}
    # 90% of 100_000 leaves 80_000 for 1_000 bytes per sample: 80, rounded to 8s.
    assert benchmark.largest_fitting_batch(plan, 4, 100_000, 8) == 80
    assert benchmark.largest_fitting_batch(plan, 4, 100_000, 3) == 78
    assert memory_fit.planned_bytes(plan) == 14_000
    # Nothing fits: the device's minimum is still returned, the caller confirms it.
    assert benchmark.largest_fitting_batch(plan, 4, 5_000, 8) == 8


def test_batch_zero_needs_a_device_memory_limit():
    with pytest.raises(SystemExit, match="largest that fits"):
        benchmark.main(["--config", TINY, "--batch", "0", "--compile-only"])


def test_indivisible_batch_is_refused_before_the_trainer(monkeypatch):
    from asrth_jax import errors, sharding, train_step

    def indivisible(batch, mesh):  # the real check's error type
        raise errors.ConfigError(f"batch {batch} does not divide across the devices")

    def never(*args, **kwargs):
        raise AssertionError("the trainer was built before the batch was checked")

    monkeypatch.setattr(sharding, "check_batch_divides", indivisible)
    monkeypatch.setattr(train_step, "TrainSetup", never)
    with pytest.raises(SystemExit, match="batch 3 does not divide"):
        benchmark.main(["--config", TINY, "--batch", "3", "--compile-only"])
