"""Benchmark the train step and inference on the current device.

    python -m asrth_jax.benchmark --config configs/vox.py --batch 8 --dtype bfloat16 \
        [--remat] [--steps 10] [--out bench.json]

Reports compile time, steady-state train step time, pairs/s, inference frames/s
(source encoded once, then keypoints + pose + generator per driving frame), compiled
FLOPs per step and per frame (XLA cost analysis), model-FLOPs utilisation against
the device's peak, and peak device memory. Prints a table and writes JSON.

Imports neither TensorFlow nor Grain nor clu, so it runs on machines that only have
JAX, Flax and Optax installed (plus ml_collections for the configs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Dense peak FLOP/s per chip by (device kind substring, dtype): vendor datasheets.
PEAK_FLOPS = {
    ("h200", "bfloat16"): 989e12, ("h200", "float32"): 67e12,
    ("h100", "bfloat16"): 989e12, ("h100", "float32"): 67e12,
    ("a100", "bfloat16"): 312e12, ("a100", "float32"): 19.5e12,
    ("tpu v4", "bfloat16"): 275e12, ("tpu v4", "float32"): 275e12 / 2,
    ("tpu v5 lite", "bfloat16"): 197e12, ("tpu v5e", "bfloat16"): 197e12,
    ("tpu v5p", "bfloat16"): 459e12, ("tpu v5", "bfloat16"): 459e12,
    ("tpu v6", "bfloat16"): 918e12,
}


def device_peak_flops(device: jax.Device, dtype: str) -> float | None:
    """Peak for this device kind and compute dtype; None where unknown (e.g. CPU)."""
    kind = device.device_kind.lower()
    for (name, peak_dtype), peak in PEAK_FLOPS.items():
        if name in kind and peak_dtype == dtype:
            return peak
    return None


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan"))) if analysis else float("nan")


def peak_memory_bytes(device: jax.Device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _timed(fn, *args, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def benchmark_train(config, batch: int, steps: int) -> dict[str, Any]:
    from asrth_jax import sharding
    from asrth_jax.train_step import Trainer

    with config.unlocked():
        config.train.global_batch_size = batch
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch_divides(batch, mesh)
    trainer = Trainer(config, mesh)
    state = trainer.init_state(config.seed)
    rng = np.random.default_rng(0)
    size = config.image_size
    local = {k: rng.uniform(size=(batch // jax.process_count(), size, size, 3))
             .astype(np.float32) for k in ("source", "source_lq", "driving")}
    data = trainer.shard_batch(local)

    start = time.perf_counter()
    compiled = trainer.train_step.lower(state, data, trainer.frozen_state).compile()
    compile_s = time.perf_counter() - start
    flops = _flops(compiled)
    state, metrics = compiled(state, data, trainer.frozen_state)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, data, trainer.frozen_state)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    return {"train_compile_s": compile_s, "train_step_s": step_s,
            "train_pairs_per_s": batch / step_s, "train_flops_per_step": flops,
            "train_loss_finite": bool(np.isfinite(float(metrics["generator_total"])))}


def benchmark_inference(config, batch: int, steps: int, dtype: str | None) -> dict[str, Any]:
    """Per driving frame: head pose of the frame, keypoints, dense motion, decoder."""
    from asrth_jax.models import adasr
    from asrth_jax.models.head_pose import transform_keypoints

    gen_side = adasr.build_generator(config.model, dtype=dtype)
    gen_side.eval()
    graphdef, state = nnx.split(gen_side)
    size = config.image_size
    source = jnp.asarray(np.random.default_rng(1).uniform(size=(1, size, size, 3)), jnp.float32)
    driving = jnp.asarray(np.random.default_rng(2).uniform(size=(batch, size, size, 3)),
                          jnp.float32)

    @jax.jit
    def encode(state, source):
        return nnx.merge(graphdef, state).source_state(source)

    @jax.jit
    def render(state, src, frames):
        model = nnx.merge(graphdef, state)
        n = frames.shape[0]
        tile = lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:])  # noqa: E731
        kp_driving = transform_keypoints(tile(src["kp_canonical"]), model.he_estimator(frames))
        return model.generator.decode(tile(src["feature_3d"]), kp_driving,
                                      tile(src["kp"]))["prediction"]

    src = jax.block_until_ready(encode(state, source))
    start = time.perf_counter()
    compiled = render.lower(state, src, driving).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(state, src, driving))
    frame_s = float(np.median(_timed(compiled, state, src, driving, repeats=steps))) / batch
    return {"inference_compile_s": compile_s, "inference_s_per_frame": frame_s,
            "inference_frames_per_s": 1.0 / frame_s,
            "inference_flops_per_frame": _flops(compiled) / batch}


def run(config, batch: int, dtype: str, remat: bool, steps: int, skip_train: bool = False
        ) -> dict[str, Any]:
    with config.unlocked():
        config.train.compute_dtype = dtype
        config.train.remat = remat
    device = jax.devices()[0]
    result: dict[str, Any] = {
        "config_image_size": config.image_size, "batch": batch, "dtype": dtype,
        "remat": remat, "device": device.device_kind, "num_devices": jax.device_count(),
        "backend": jax.default_backend(),
    }
    if not skip_train:
        result.update(benchmark_train(config, batch, steps))
    result.update(benchmark_inference(config, batch, steps,
                                      None if dtype == "float32" else dtype))
    peak = device_peak_flops(device, dtype)
    result["peak_flops_per_device"] = peak
    if peak and not skip_train:
        achieved = result["train_flops_per_step"] / result["train_step_s"]
        # cost_analysis counts the whole (SPMD) program; divide over devices.
        result["train_mfu"] = achieved / (peak * jax.device_count())
    result["peak_memory_bytes"] = peak_memory_bytes(device)
    return result


def main(argv: list[str] | None = None) -> int:
    from asrth_jax.config_lib import load_config_file

    parser = argparse.ArgumentParser(prog="python -m asrth_jax.benchmark")
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch", type=int, default=None,
                        help="global batch (default: the config's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--steps", type=int, default=5, help="timed repeats")
    parser.add_argument("--inference-only", action="store_true")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    config = load_config_file(args.config)
    batch = args.batch or config.train.global_batch_size
    try:
        result = run(config, batch, args.dtype, args.remat, args.steps, args.inference_only)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    for key, value in result.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:>28}: {shown}")
    text = json.dumps(result)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
