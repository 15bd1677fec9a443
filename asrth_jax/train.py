"""Train AdaSR: `python -m asrth_jax.train --config configs/vox.py --workdir DIR`.

One loop (big_vision style), read top to bottom: the config checked once
(`config_lib.validate`), data from Grain, the state (`train_state.TrainState`,
restored or initialised), one jitted `train_step` per step (`train_step.TrainSetup`), and
side effects at the edge: Orbax checkpoints (`checkpoints.TrainCheckpointer`: async,
kept N, also on SIGTERM), TensorBoard scalars and `metrics.jsonl`, image grids through
clu, the periodic evaluation (`asrth_jax.reconstruction_eval` on held-out videos),
progress/ETA, profiling. A run resumes automatically from the latest checkpoint in
`--workdir`.

Multi-host: pass `--distributed` (Cloud TPU, SLURM, GKE: auto-detected) or the three
`--coordinator_address/--num_processes/--process_id` flags.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from asrth_jax import cli_args, compile_cache, errors
from asrth_jax.preemption import PreemptionWatch

if TYPE_CHECKING:
    from asrth_jax.reconstruction_eval import Evaluator

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/vox.py.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints and TensorBoard logs (local or gs://).")
flags.DEFINE_bool("compile_cache", True, "Persistent compilation cache (asrth_jax.compile_cache); "
                  "--nocompile_cache turns it off.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detect).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Number of processes.")
flags.DEFINE_integer("process_id", None, "This process's index.")

BATCH_KEYS = ("source", "source_lq", "driving")
EVAL_GRID_TAG = "eval/source|lq|driving|prediction|occlusion|kp|landmarks"


class StopTraining(errors.AsrthError):
    """Ends the run with a one-line reason (NaN, bad config, a workdir or a log write
    that fails); `main()` makes it `error: <reason>` and exit status 1."""


def initialize_distributed(config) -> None:
    if config.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", config.cpu_collectives)
    explicit = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise StopTraining("--coordinator_address, --num_processes and --process_id go "
                               "together; pass all three or use --distributed")
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                   FLAGS.process_id)
    elif FLAGS.distributed:
        jax.distributed.initialize()


def make_image_grid(batch: dict[str, np.ndarray], visuals: dict[str, np.ndarray],
                    max_rows: int = 4) -> np.ndarray:
    """Rows of source | degraded source | driving | prediction | occlusion | keypoints,
    and | landmarks where the batch has the true landmarks (synthetic evaluation): the
    source with its true landmarks (green) and where the predicted deformation sends the
    true driving landmarks (red)."""
    import cv2

    from asrth_jax import motion_metrics

    rows = []
    n = min(max_rows, batch["source"].shape[0])
    sent = None
    if "driving_landmarks" in batch and "deformation" in visuals:
        sent = np.asarray(motion_metrics.transferred_landmarks(
            np.asarray(visuals["deformation"][:n]), batch["driving_landmarks"][:n],
            batch["source"].shape[1:3]))
    for i in range(n):
        size = batch["source"].shape[1]
        occlusion = cv2.resize(np.asarray(visuals["occlusion_map"][i, ..., 0], np.float32),
                               (size, size), interpolation=cv2.INTER_NEAREST)
        kp_canvas = np.ascontiguousarray(batch["driving"][i].astype(np.float32).copy())
        for kp, colour in ((visuals["kp_driving"][i], (1.0, 0.2, 0.2)),
                           (visuals["kp_source"][i], (0.2, 0.4, 1.0))):
            for x, y in np.asarray(kp)[:, :2]:
                centre = (int((x + 1) / 2 * (size - 1)), int((y + 1) / 2 * (size - 1)))
                cv2.circle(kp_canvas, centre, max(1, size // 64), colour, -1)
        tiles = [batch["source"][i], batch["source_lq"][i], batch["driving"][i],
                 visuals["prediction"][i], np.repeat(occlusion[..., None], 3, -1), kp_canvas]
        if sent is not None:
            tiles.append(motion_metrics.draw_landmark_transfer(
                batch["source"][i], batch["source_landmarks"][i], sent[i]))
        rows.append(np.concatenate([np.clip(np.asarray(t, np.float32), 0, 1) for t in tiles], 1))
    return np.concatenate(rows, 0)


def eval_data_config(config) -> Any:
    """`config.data` for the periodic evaluation: the configured number of videos and
    frames, and the clean frame 0 as the generator's source unless
    `config.eval.degraded_source` (then `source_lq` is degraded with a fixed seed)."""
    from data_pipelines.config import set_reconstruction_eval

    data_cfg = config.data.copy_and_resolve_references()
    with data_cfg.unlocked():
        set_reconstruction_eval(data_cfg, max_videos=config.eval.num_videos,
                                max_frames=config.eval.max_frames,
                                degraded_source=config.eval.degraded_source)
    return data_cfg


def make_evaluator(config) -> Evaluator:
    """This host's share of the periodic evaluation (`reconstruction_eval.Evaluator`),
    in batches of the per-host training batch size. Built once per run: it keeps the
    opened test split and its decoded videos between evaluations."""
    from asrth_jax import reconstruction_eval

    return reconstruction_eval.Evaluator(
        eval_data_config(config), batch_size=config.train.global_batch_size // jax.process_count(),
        shard_index=jax.process_index(), shard_count=jax.process_count())


def _eval_step(setup, state):
    """The evaluator's step on the compiled, sharded `train_step.eval_step`: host
    batches and masks become global arrays; the sums come back replicated."""

    def step(local: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
        args = (state, setup.shard_batch(local),
                jax.make_array_from_process_local_data(setup.batch_sharding, mask))
        return jax.device_get(setup.compiled("eval", setup.eval_step, *args)(*args))

    return step


def evaluate(setup, state, evaluator: Evaluator) -> dict[str, float]:
    """The reconstruction protocol on held-out videos (`asrth_jax.reconstruction_eval`):
    means of the model's, copy-source's and no-motion's scores, as `eval/{key}`."""
    means = evaluator.run(_eval_step(setup, state))
    return {f"eval/{k}": v for k, v in means.items()}


def eval_image_grid(setup, state, evaluator: Evaluator) -> np.ndarray | None:
    """The image grid of the first evaluation batch with the landmark-transfer column, on
    synthetic data (None for real data: it has no true landmarks). Runs the train loop's
    compiled visual step (same images-only batch), so it costs one forward pass."""
    if evaluator.truth is None:
        return None
    local, _ = evaluator.batch(0)
    batch = setup.shard_batch({k: local[k] for k in BATCH_KEYS})
    visual_step = setup.compiled("visual", setup.visual_step, state, batch)
    visuals = jax.device_get(visual_step(state, batch))
    host = {k: np.asarray(v, np.float32) / (255.0 if v.dtype == np.uint8 else 1.0)
            for k, v in local.items() if k in BATCH_KEYS}
    host.update({k: local[k] for k in local if k not in BATCH_KEYS})
    return make_image_grid(host, visuals)


def all_finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) training; returns the last logged scalars."""
    from asrth_jax import checkpoints, config_lib, sharding
    from asrth_jax import workdir as workdir_lib

    # Everything checkable is checked before anything is created.
    try:
        config_lib.validate(config)
        mesh = sharding.make_mesh(config.mesh)
        sharding.check_batch_divides(config.train.global_batch_size, mesh)
        workdir_lib.check_workdir(workdir)
    except errors.AsrthError as exc:  # ConfigError, WorkdirError: user-fixable, one line
        raise StopTraining(str(exc)) from None
    # One trainer per workdir: each process of a run holds the lock of its index.
    try:
        with workdir_lib.exclusive(workdir, jax.process_index()):
            return _train(config, workdir, mesh)
    except (workdir_lib.WorkdirError, checkpoints.SaveError) as exc:
        raise StopTraining(str(exc)) from None


class _ScalarLog:
    """TensorBoard scalars and images and the scalars' machine-readable twin,
    `metrics.jsonl` (one JSON object per log step, written by the chief). A write that
    fails (a full disk, ...) stops training in one line naming the last good checkpoint."""

    def __init__(self, writer, workdir: str, is_chief: bool, checkpointer):
        self.writer = writer
        self.workdir = workdir
        self.checkpointer = checkpointer
        self.file = (epath.Path(workdir) / "metrics.jsonl").open("a") if is_chief else None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        with self._stop_on_failure():
            self.writer.write_scalars(step, scalars)
            if self.file is not None:
                self.file.write(json.dumps({"step": step, **scalars}) + "\n")
                self.file.flush()

    def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        with self._stop_on_failure():
            self.writer.write_images(step, images)

    @contextlib.contextmanager
    def _stop_on_failure(self) -> Iterator[None]:
        from asrth_jax.checkpoints import storage_reason

        try:
            yield
        except Exception as exc:  # noqa: BLE001 - OS, TensorFlow and clu's async errors
            raise StopTraining(
                f"writing the logs in {self.workdir} failed ({storage_reason(exc)}); training "
                f"stopped: {self.checkpointer.resume_hint()}") from None

    def close(self) -> None:
        """Closes the files; a final flush that fails is a warning (the run's state is
        in its checkpoints, which `TrainCheckpointer.close` confirms)."""
        try:
            if self.file is not None:
                self.file.close()
            self.writer.close()
        except Exception as exc:  # noqa: BLE001 - as in _stop_on_failure
            logging.warning("could not flush the logs in %s: %s", self.workdir,
                            " ".join(str(exc).split())[:200])


def _restore_or_init(setup, checkpointer, config, workdir: str, is_chief: bool):
    """The newest intact checkpoint's state, or a fresh one (its sizes logged)."""
    from clu import parameter_overview

    from asrth_jax import checkpoints

    try:
        latest, state = checkpointer.restore_newest_intact()
    except checkpoints.ResumeError as exc:
        checkpointer.close()
        raise StopTraining(str(exc)) from None
    if latest is not None:
        logging.info("resuming from %s at step %d", workdir, latest)
        return state
    state = setup.init_state(config.seed)
    if is_chief:
        for name, network in state.networks().items():
            logging.info("%s parameters:\n%s", name.replace("_", " "),
                         parameter_overview.get_parameter_overview(
                             network.params.to_pure_dict(), include_stats=False))
    return state


def _mean_scalars(pending: list[dict[str, jax.Array]], step: int, checkpointer
                  ) -> dict[str, float]:
    """The mean of the steps' losses since the last log; a non-finite one stops training."""
    host = jax.device_get(pending)
    if not all(all_finite(m) for m in host):
        bad = next(m for m in host if not all_finite(m))
        raise StopTraining(
            f"non-finite loss at or before step {step} ({bad}); stopping without "
            f"saving, {checkpointer.resume_hint()}")
    return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def _train_grid(setup, state, batch, local) -> np.ndarray:
    """The image grid of this training batch (images only: the evaluation grid reuses
    this compiled program)."""
    images = {k: batch[k] for k in BATCH_KEYS}
    visual_step = setup.compiled("visual", setup.visual_step, state, images)
    visuals = jax.device_get(visual_step(state, images))
    return make_image_grid({k: np.asarray(local[k], np.float32) for k in BATCH_KEYS}, visuals)


def _train(config, workdir: str, mesh) -> dict[str, Any]:
    from clu import metric_writers, periodic_actions

    from asrth_jax import checkpoints, memory_fit
    from asrth_jax.optimizer import lr_schedule
    from asrth_jax.schedule import resolve_epochs
    from asrth_jax.train_step import TrainSetup
    from data_pipelines.pipeline import make_pair_source, make_train_loader

    is_chief = jax.process_index() == 0
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)

    # Epoch-counted lengths and milestones become steps once the dataset is open.
    source = make_pair_source(config.data, "train", config.seed)
    try:
        config = resolve_epochs(config, len(source))
    except errors.AsrthError as exc:  # a ConfigError: too few records for one batch
        raise StopTraining(str(exc)) from None
    data_iterator = make_train_loader(
        config.data, seed=config.seed, global_batch_size=config.train.global_batch_size,
        shard_index=jax.process_index(), shard_count=jax.process_count(), source=source)
    setup = TrainSetup(config, mesh)
    schedule = lr_schedule(config.optim)
    logging.info("perceptual network: %s; head-pose loss weight: %s (teacher: %s)",
                 config.loss.perceptual_network, setup.headpose_weight,
                 config.loss.headpose_teacher)
    checkpointer = checkpoints.TrainCheckpointer(
        workdir, config.checkpoint.keep, setup.abstract_state(with_shardings=True),
        data_iterator)
    state = _restore_or_init(setup, checkpointer, config, workdir, is_chief)
    start_step = int(jax.device_get(state.step))

    # Preemption: finish the step, checkpoint it, exit; at the same step on every process.
    evaluator = make_evaluator(config) if config.eval.every_steps else None
    preemption = PreemptionWatch()
    preemption.listen()
    hooks = []
    if is_chief:
        hooks.append(periodic_actions.ReportProgress(num_train_steps=config.train.num_steps,
                                                     writer=writer))
        if config.log.profile_steps:
            hooks.append(periodic_actions.Profile(num_profile_steps=config.log.profile_steps,
                                                  logdir=workdir, first_profile=start_step + 10))
    log = _ScalarLog(writer, workdir, is_chief, checkpointer)
    pending: list[dict[str, jax.Array]] = []
    last_scalars: dict[str, Any] = {}
    tick = time.perf_counter()
    step = start_step
    try:
        while step < config.train.num_steps:
            # A checkpoint that failed to save in the background stops the run here, not
            # at the next save (the steps since the last good one would be lost).
            checkpointer.check_saved()
            local = next(data_iterator)
            batch = setup.shard_batch(local)
            train_step = setup.compiled("train", setup.train_step, state, batch,
                                        setup.frozen_state)
            if step == start_step:  # compiled, nothing run: refuse a step that cannot fit
                try:
                    memory_fit.check_step_fits(train_step, config)
                except memory_fit.StepTooLarge as exc:
                    raise StopTraining(str(exc)) from None
            state, metrics = train_step(state, batch, setup.frozen_state)
            step += 1
            pending.append(metrics)
            for hook in hooks:
                hook(step)

            # Asked once a step: a signal landing later in this iteration is handled
            # (checkpoint, then exit) at the end of the next step, never skipped.
            stopping = preemption.reached(step)
            log_now = step % config.log.scalars_every_steps == 0
            save_now = (step % config.checkpoint.every_steps == 0 or stopping
                        or step == config.train.num_steps)
            if log_now or save_now:
                scalars = _mean_scalars(pending, step, checkpointer)
                elapsed = time.perf_counter() - tick
                tick = time.perf_counter()
                scalars["step_time_s"] = elapsed / len(pending)
                scalars["pairs_per_s"] = config.train.global_batch_size * len(pending) / elapsed
                scalars["lr"] = float(schedule(step - 1))  # the rate this step used
                pending = []
                log.write(step, scalars)
                last_scalars = {"step": step, **scalars}
            if step % config.log.images_every_steps == 0 or step == start_step + 1:
                log.write_images(step, {"source|lq|driving|prediction|occlusion|kp":
                                           _train_grid(setup, state, batch, local)[None]})
            if config.eval.every_steps and (step % config.eval.every_steps == 0
                                            or step == config.train.num_steps):
                eval_scalars = evaluate(setup, state, evaluator)
                log.write(step, eval_scalars)
                if (grid := eval_image_grid(setup, state, evaluator)) is not None:
                    log.write_images(step, {EVAL_GRID_TAG: grid[None]})
                last_scalars.update(eval_scalars)
            if save_now:
                checkpointer.save(step, state)
            if stopping:
                logging.warning("SIGTERM: saved step %d, exiting", step)
                break
    finally:
        preemption.close()
        try:
            checkpointer.close()  # SaveError if the last save failed
        finally:
            log.close()
    return last_scalars


class _QuietLibraries(logging.Filter):
    """Orbax and Grain log every file operation at INFO: keep their warnings only. A
    failed background save (a full disk) is logged by each of Orbax's, TensorStore's
    and clu's threads with a traceback, and by asyncio once per abandoned write task at
    exit: the libraries keep one line each, the abandoned tasks none; the trainer's own
    one-line error says what happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "asyncio" and "exception was never retrieved" in record.getMessage():
            return False
        if "site-packages" in record.pathname:
            record.exc_info, record.exc_text = None, None
        noisy = ("/orbax/", "/grain/", "/tensorstore")
        return record.levelno >= logging.WARNING or not any(
            n in record.pathname for n in noisy)


def _quiet_closed_loop_callbacks() -> None:
    """After a save fails, TensorStore's remaining write callbacks reach the event loop
    that Orbax has closed, and each prints (through `sys.excepthook` or
    `sys.unraisablehook`) a traceback ending in asyncio's 'Event loop is closed'
    (hundreds for one full disk): they say nothing the trainer's one-line error does
    not. Every other exception is printed as before."""

    def closed_loop(kind, value, tb) -> bool:
        frames = traceback.extract_tb(tb) if tb is not None else []
        return (kind is RuntimeError and str(value) == "Event loop is closed"
                and bool(frames) and frames[0].name == "call_soon_threadsafe")

    printing, reporting = sys.excepthook, sys.unraisablehook

    def excepthook(kind, value, tb) -> None:
        if not closed_loop(kind, value, tb):
            printing(kind, value, tb)

    def unraisablehook(unraisable) -> None:
        if not closed_loop(unraisable.exc_type, unraisable.exc_value,
                           unraisable.exc_traceback):
            reporting(unraisable)

    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.config is None or FLAGS.workdir is None:
        raise app.UsageError("pass --config configs/NAME.py and --workdir DIR")
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
        handler.addFilter(_QuietLibraries())
    _quiet_closed_loop_callbacks()
    config = FLAGS.config
    compile_cache.enable_if(FLAGS.compile_cache)
    try:
        initialize_distributed(config)
        train_and_evaluate(config, FLAGS.workdir)
    except errors.AsrthError as exc:  # StopTraining, a dataset that is not there, ...
        # A failed save leaves Orbax's write coroutines unawaited; at exit Python warns
        # for each (a RuntimeWarning and a tracemalloc hint) after the one-line error.
        warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited",
                                category=RuntimeWarning)
        raise cli_args.fail(str(exc)) from None


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with a one-line error (misspelt config key, bad value, a
    config path that is missing, not a .py file, without get_config, or whose
    get_config returns something else than a config of known keys)."""
    from asrth_jax import config_lib

    for index, arg in enumerate(argv):
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else (
            argv[index + 1] if arg == "--config" and index + 1 < len(argv) else None)
        if path is not None:
            try:  # the same checks as every other entry point, before absl runs it
                config_lib.load_config_file(path)
            except config_lib.ConfigError as exc:  # exit 2, as absl's own flag errors
                raise cli_args.fail(str(exc), status=2) from None
    try:
        return FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as exc:
        message = " ".join(str(exc).replace("\\n", " ").replace("\\'", "'").split())
        raise cli_args.fail(f"bad flag or config override: {message}", status=2) from None


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
