"""Helpers of `launch/gpu_benchmark.sh` (the 12-minute benchmark on one GPU).

    python -m asrth_jax.benchmark_suite preflight [--backend gpu] [--torch]
    python -m asrth_jax.benchmark_suite record DIR --case NAME --status ok \
        --exit-code 0 --wall-s 41.2 --budget-s 150
    python -m asrth_jax.benchmark_suite table DIR

`preflight` checks, in one line each, that what the benchmark imports is installed and
that JAX sees the expected device, before any case spends its budget: it imports only
the standard library until each module has been found, so a missing JAX is one line,
not a traceback. `record` adds one finished (or cut-off) case to `DIR/summary.json`,
rewritten whole after every case (beside, then renamed), with the figures each case's
own JSON holds so far, and derives what needs two cases: MFU against the matmul rate
measured on the same device (the practical ceiling) beside the datasheet's, and our
inference against the PyTorch reference at the same size, dtype and batch. `table`
prints the summary as a table.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from data_pipelines.errors import AsrthError, fail

# (module, what to do when it is missing). The benchmark itself needs the first group;
# torch only the PyTorch reference case.
REQUIRED_MODULES = (
    ("numpy", "pip install numpy"),
    ("jax", "pip install 'jax[cuda13]' (or the JAX build for this accelerator)"),
    ("flax", "pip install flax"),
    ("optax", "pip install optax"),
    ("ml_collections", "on a machine with PyPI: pip download ml_collections --no-deps -d "
     ".whl, carry .whl to this machine; gpu_benchmark.sh puts .whl/*.whl on PYTHONPATH"),
    ("absl", "pip install absl-py (ml_collections needs it)"),
    ("yaml", "pip install PyYAML (ml_collections needs it)"),
    ("cv2", "pip install opencv-python-headless (the synthetic batch's landmarks)"),
)
SUMMARY = "summary.json"
MATMUL_CASE = "matmul_bf16"
TORCH_CASE = "torch_reference"


class PreflightError(AsrthError, RuntimeError):
    """Something the benchmark needs is missing (one-line message)."""


def preflight(backend: str | None, want_torch: bool) -> str:
    """One line naming what was found; raises PreflightError naming what is missing."""
    missing = [f"{name} ({hint})" for name, hint in REQUIRED_MODULES
               if importlib.util.find_spec(name) is None]
    if missing:
        raise PreflightError("missing module " + "; missing module ".join(missing))
    import jax

    try:
        devices = jax.devices()
    except RuntimeError as exc:  # e.g. a CUDA plugin that cannot start
        raise PreflightError(f"JAX {jax.__version__} found no device: "
                             f"{str(exc).splitlines()[0]}") from None
    if backend and jax.default_backend() != backend:
        raise PreflightError(f"JAX {jax.__version__} runs on {jax.default_backend()} "
                             f"({devices[0].device_kind}), not {backend}: install the JAX "
                             "build for this accelerator, or pass --tiny to test on CPU")
    found = [f"jax {jax.__version__} on {len(devices)} x {devices[0].device_kind}"]
    for name in ("flax", "optax", "ml_collections"):
        found.append(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    if want_torch:
        found.append(torch_status())
    return "preflight ok: " + ", ".join(found)


def torch_status() -> str:
    """What the PyTorch reference case will find (it skips, with this reason, without)."""
    if importlib.util.find_spec("torch") is None:
        return "no torch (the reference case will be skipped)"
    import torch

    cuda = torch.cuda.is_available()
    where = f"CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}" if cuda else \
        "no CUDA device"
    return f"torch {torch.__version__} ({where})"


def _load(path: Path) -> dict[str, Any] | None:
    """A JSON file as written by the benchmark; None when absent or unreadable (a case
    killed before its first write)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, data: dict[str, Any]) -> None:
    from asrth_jax import cli_args

    with cli_args.replaced_when_whole(path) as temporary:
        Path(temporary).write_text(json.dumps(data, indent=1) + "\n")


def record(out_dir: Path, case: str, status: str, exit_code: int, wall_s: float,
           budget_s: float, note: str = "") -> dict[str, Any]:
    """Adds (or replaces) `case` in `out_dir/summary.json` and rewrites the derived
    figures; returns the summary."""
    summary = _load(out_dir / SUMMARY) or {"cases": {}}
    entry: dict[str, Any] = {"status": status, "exit_code": exit_code, "wall_s": wall_s,
                             "budget_s": budget_s}
    if note:
        entry["note"] = note
    result = _load(out_dir / f"{case}.json")
    if result is not None:
        entry["phase"] = result.get("phase")
        entry["result"] = result
    summary["cases"][case] = entry
    summary["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    summary["derived"] = derive(summary["cases"])
    _write(out_dir / SUMMARY, summary)
    return summary


def derive(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """MFU against both ceilings for every case that has a rate, and ours/reference
    inference speed where both sides measured the same (size, dtype, batch)."""
    results = {name: entry.get("result") or {} for name, entry in cases.items()}
    practical = results.get(MATMUL_CASE, {}).get("matmul_flops_per_s")
    derived: dict[str, Any] = {"matmul_flops_per_s": practical}
    for name, result in results.items():
        figures: dict[str, Any] = {}
        peak = result.get("peak_flops_per_device")
        devices = result.get("num_devices", 1)
        if result.get("train_step_s") and result.get("train_flops_per_step"):
            rate = result["train_flops_per_step"] / result["train_step_s"] / devices
            figures["train"] = _mfu(rate, peak, practical)
        for batch, inference in (result.get("inference_by_batch") or {}).items():
            if inference.get("inference_s_per_frame") and \
                    inference.get("inference_flops_per_frame"):
                rate = (inference["inference_flops_per_frame"]
                        / inference["inference_s_per_frame"])
                figures[f"inference_batch_{batch}"] = _mfu(rate, peak, practical)
        if figures:
            derived[name] = figures
    reference = results.get(TORCH_CASE, {}).get("cases") or {}
    versus = {}
    for result in results.values():
        size, dtype = result.get("config_image_size"), result.get("dtype")
        for batch, inference in (result.get("inference_by_batch") or {}).items():
            theirs = reference.get(f"{size}_{dtype}_b{batch}")
            if theirs and theirs.get("frames_per_s") and \
                    inference.get("inference_frames_per_s"):
                versus[f"{size}_{dtype}_b{batch}"] = {
                    "ours_frames_per_s": inference["inference_frames_per_s"],
                    "reference_frames_per_s": theirs["frames_per_s"],
                    "ours_over_reference": inference["inference_frames_per_s"]
                    / theirs["frames_per_s"]}
    if versus:
        derived["ours_vs_reference"] = versus
    return derived


def _mfu(rate: float, peak: float | None, practical: float | None) -> dict[str, Any]:
    return {"flops_per_s": rate, "mfu_datasheet": rate / peak if peak else None,
            "mfu_practical": rate / practical if practical else None}


def _cell(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value * scale:.{digits}g}"
    return str(value)


def table(summary: dict[str, Any]) -> str:
    """One row per case: status, wall time and the figures that answer the issue."""
    rows = ["case | status | wall s/budget | phase | batch | first step s (since start) | "
            "compile s (distinct kernels) | step s | pairs/s | MFU sheet/practical | peak GiB | "
            "first frame s | frames/s by batch"]
    derived = summary.get("derived", {})
    for name, entry in summary["cases"].items():
        result = entry.get("result") or {}
        mfu = derived.get(name, {}).get("train", {})
        peak = result.get("peak_memory_bytes")
        fps = ", ".join(f"b{b}: {_cell(v.get('inference_frames_per_s'))}"
                        for b, v in (result.get("inference_by_batch") or {}).items())
        if name == TORCH_CASE:
            fps = ", ".join(f"{k}: {_cell(v.get('frames_per_s'))}"
                            for k, v in (result.get("cases") or {}).items())
        if name == MATMUL_CASE and "matmul_flops_per_s" in result:
            fps = (f"{_cell(result['matmul_flops_per_s'], 1e-12)} TFLOP/s "
                   f"({_cell(result.get('matmul_over_peak'))} of the datasheet)")
        rows.append(" | ".join([
            name, entry["status"], f"{entry['wall_s']:.0f}/{entry['budget_s']:.0f}",
            str(entry.get("phase") or "-"), _cell(result.get("batch")),
            f"{_cell(result.get('train_first_step_s'))} "
            f"({_cell(result.get('train_first_step_since_process_start_s'))})",
            f"{_cell(result.get('train_compile_s'))} "
            f"({_cell((result.get('train_kernels') or {}).get('distinct'))})",
            _cell(result.get("train_step_s")), _cell(result.get("train_pairs_per_s")),
            f"{_cell(mfu.get('mfu_datasheet'))}/{_cell(mfu.get('mfu_practical'))}",
            _cell(float(peak) if peak else None, 2 ** -30),
            _cell(result.get("inference_first_frame_s")), fps or "-"]))
    versus = derived.get("ours_vs_reference", {})
    for key, figures in versus.items():
        rows.append(f"ours/reference {key}: {figures['ours_over_reference']:.2f}x "
                    f"({figures['ours_frames_per_s']:.3g} vs "
                    f"{figures['reference_frames_per_s']:.3g} frames/s)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asrth_jax.benchmark_suite")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("preflight")
    check.add_argument("--backend", default=None, help="the JAX backend required (gpu)")
    check.add_argument("--torch", action="store_true", help="also say what torch finds")
    add = commands.add_parser("record")
    add.add_argument("out_dir", type=Path)
    add.add_argument("--case", required=True)
    add.add_argument("--status", required=True,
                     choices=("ok", "failed", "timed_out", "skipped"))
    add.add_argument("--exit-code", type=int, required=True)
    add.add_argument("--wall-s", type=float, required=True)
    add.add_argument("--budget-s", type=float, required=True)
    add.add_argument("--note", default="")
    show = commands.add_parser("table")
    show.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "preflight":
        try:
            print(preflight(args.backend, args.torch), flush=True)
        except PreflightError as exc:  # exit 2: launch/gpu_benchmark.sh stops on it
            raise fail(str(exc), status=2) from None
        return 0
    if args.command == "record":
        record(args.out_dir, args.case, args.status, args.exit_code, args.wall_s,
               args.budget_s, args.note)
        return 0
    summary = _load(args.out_dir / SUMMARY)
    if summary is None:
        raise fail(f"no {args.out_dir / SUMMARY}; run launch/gpu_benchmark.sh first", status=2)
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
