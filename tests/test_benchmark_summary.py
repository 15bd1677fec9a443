"""Benchmark and model-summary CLIs on CPU with the tiny test config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from asrth_jax import benchmark
from asrth_jax.models import summary

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "tiny_train_config.py")


def test_peak_table_knows_accelerators_and_not_cpu():
    h100 = SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
    assert benchmark.device_peak_flops(h100, "bfloat16") == 989e12
    assert benchmark.device_peak_flops(SimpleNamespace(device_kind="TPU v5p"), "bfloat16")
    assert benchmark.device_peak_flops(SimpleNamespace(device_kind="cpu"), "float32") is None


def test_inference_benchmark_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(["--config", TINY, "--batch", "2", "--steps", "1",
                           "--inference-only", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["inference_s_per_frame"] > 0
    assert result["inference_flops_per_frame"] > 0
    assert result["batch"] == 2 and result["dtype"] == "float32"
    assert "inference_frames_per_s" in capsys.readouterr().out


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
    assert benchmark.planned_bytes(plan) == 14_000
    # Nothing fits: the device's minimum is still returned, the caller confirms it.
    assert benchmark.largest_fitting_batch(plan, 4, 5_000, 8) == 8


def test_batch_zero_needs_a_device_memory_limit():
    with pytest.raises(SystemExit, match="largest that fits"):
        benchmark.main(["--config", TINY, "--batch", "0", "--compile-only"])


def test_indivisible_batch_is_refused_before_the_trainer(monkeypatch):
    from asrth_jax import sharding, train_step

    def indivisible(batch, mesh):
        raise ValueError(f"batch {batch} does not divide across the devices")

    def never(*args, **kwargs):
        raise AssertionError("the trainer was built before the batch was checked")

    monkeypatch.setattr(sharding, "check_batch_divides", indivisible)
    monkeypatch.setattr(train_step, "TrainSetup", never)
    with pytest.raises(SystemExit, match="batch 3 does not divide"):
        benchmark.main(["--config", TINY, "--batch", "3", "--compile-only"])
