"""launch/gpu_benchmark.sh's helpers: preflight, the summary rewritten after every
case (MFU against both ceilings, ours against the reference), and the PyTorch
reference's benchmark on CPU with its tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asrth_jax import benchmark_suite as suite

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data))


def test_preflight_names_what_is_missing_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(suite, "REQUIRED_MODULES", suite.REQUIRED_MODULES + (
        ("no_such_module_for_this_test", "carry its wheel in .whl"),))
    with pytest.raises(SystemExit) as exc:  # exit 2: launch/gpu_benchmark.sh stops
        suite.main(["preflight"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: missing module no_such_module_for_this_test (carry its wheel in "
                   ".whl)"]


def test_preflight_refuses_the_wrong_backend_and_names_what_it_found(capsys):
    import jax

    with pytest.raises(SystemExit) as exc:
        suite.main(["preflight", "--backend", "gpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"runs on {jax.default_backend()}" in err[0] and "not gpu" in err[0]
    assert suite.main(["preflight"]) == 0
    assert capsys.readouterr().out.startswith(f"preflight ok: jax {jax.__version__} on 1 x ")


def test_record_keeps_every_case_and_a_cut_one_as_far_as_it_got(tmp_path):
    _write(tmp_path / "vox_b32.json", {"phase": "compiled", "init_state_s": 2.0})
    suite.record(tmp_path, "vox_b32", "timed_out", 124, 150.0, 150.0)
    suite.record(tmp_path, "vox_max", "failed", 1, 3.0, 100.0)  # died before its first write
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["cases"]) == ["vox_b32", "vox_max"]
    assert summary["cases"]["vox_b32"]["result"] == {"phase": "compiled", "init_state_s": 2.0}
    assert summary["cases"]["vox_b32"]["phase"] == "compiled"
    assert "result" not in summary["cases"]["vox_max"]
    assert summary["cases"]["vox_max"]["exit_code"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "vox_b32.json"]


def test_summary_reads_mfu_against_both_ceilings_and_ours_against_the_reference(tmp_path):
    _write(tmp_path / "vox_b32.json", {
        "phase": "done", "batch": 32, "num_devices": 1, "peak_flops_per_device": 1000.0,
        "train_flops_per_step": 400.0, "train_step_s": 2.0, "train_first_step_s": 50.0,
        "train_compile_s": 40.0, "train_kernels": {"kernels": 9000, "distinct": 3000},
        "peak_memory_bytes": 2 ** 31})
    _write(tmp_path / "animate_256_bf16.json", {
        "phase": "done", "config_image_size": 256, "dtype": "bfloat16",
        "peak_flops_per_device": 1000.0, "inference_by_batch": {
            "1": {"inference_flops_per_frame": 10.0, "inference_s_per_frame": 0.1,
                  "inference_frames_per_s": 10.0}}})
    _write(tmp_path / "torch_reference.json", {"phase": "done", "cases": {
        "256_bfloat16_b1": {"frames_per_s": 4.0}, "512_bfloat16_b1": {"frames_per_s": 1.0}}})
    for case in ("vox_b32", "animate_256_bf16", "torch_reference"):
        suite.record(tmp_path, case, "ok", 0, 10.0, 100.0)
    derived = json.loads((tmp_path / "summary.json").read_text())["derived"]
    assert derived["vox_b32"]["train"] == {"flops_per_s": 200.0, "mfu_datasheet": 0.2,
                                           "mfu_practical": None}  # no matmul case yet
    assert derived["ours_vs_reference"] == {"256_bfloat16_b1": {
        "ours_frames_per_s": 10.0, "reference_frames_per_s": 4.0, "ours_over_reference": 2.5}}
    _write(tmp_path / "matmul_bf16.json", {"phase": "done", "matmul_flops_per_s": 500.0})
    summary = suite.record(tmp_path, "matmul_bf16", "ok", 0, 5.0, 30.0)
    assert summary["derived"]["vox_b32"]["train"]["mfu_practical"] == 0.4
    assert summary["derived"]["animate_256_bf16"]["inference_batch_1"] == {
        "flops_per_s": 100.0, "mfu_datasheet": 0.1, "mfu_practical": 0.2}
    table = suite.table(summary)
    assert "vox_b32 | ok | 10/100 | done | 32 | 50 (-) | 40 (3000) | 2 | - | 0.2/0.4 | 2 |" \
        in table
    assert "ours/reference 256_bfloat16_b1: 2.50x (10 vs 4 frames/s)" in table
    assert "5e-10 TFLOP/s" in table


def test_table_cli_without_a_summary_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        suite.main(["table", str(tmp_path)])
    assert exc.value.code == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: no ") and "run launch/gpu_benchmark.sh first" in line


@pytest.mark.slow
def test_torch_reference_benchmark_on_cpu_matches_our_case_keys(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "torch.json"
    proc = subprocess.run([sys.executable, "tests/torch_reference_benchmark.py", "--model",
                           "tiny", "--sizes", "32", "--dtypes", "float32,bfloat16", "--batches",
                           "2", "--steps", "1", "--device", "cpu", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["phase"] == "done" and result["device"] == "cpu"
    assert list(result["cases"]) == ["32_float32_b2", "32_bfloat16_b2"]
    for case in result["cases"].values():
        assert case["frames_per_s"] == pytest.approx(1 / case["s_per_frame"])
        assert case["first_batch_s"] > 0


def test_torch_reference_without_cuda_is_skipped_with_the_reason(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "torch.json"
    proc = subprocess.run([sys.executable, "tests/torch_reference_benchmark.py", "--device",
                           "cuda", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("reference skipped: torch ")
    result = json.loads(out.read_text())
    assert "sees no CUDA device" in result["skipped"] and result["cases"] == {}
