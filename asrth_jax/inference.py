"""Jitted inference core: encode a source once, render driving frames in fixed batches.

    animator = make_animator(generator_side, batch_size=4)
    src = animator.encode_source(source_image)                # once per video
    motion = animator.prepare_motion(src, driving[0], relative=True, adapt_scale=True)
    frames = animator.render(src, driving, motion)            # (T, H, W, 3) float32

Per driving frame only the head-pose/expression estimator, the keypoint
transformation and the generator's dense motion + decoder run (as in the reference
`demo.py`); the canonical keypoints, source pose and the appearance feature volume
come from the source once. Driving frames go through ONE jitted function in batches of
`batch_size` (the last batch is padded), so a video costs one compilation.

Motion modes follow the reference demo (`normalize_kp` of FOMM in face-vid2vid form):
relative: kp = kp_source + s * (kp_driving - kp_driving_initial), s = 1 or, with
adapt_scale, sqrt(hull area of kp_source[:, :2]) / sqrt(hull area of
kp_driving_initial[:, :2]); absolute: kp = kp_driving. Free-view yaw/pitch/roll (degrees)
replace the estimated driving angles (the initial driving keypoints keep the estimate,
as in the reference).

The encode/drive maths is the model's (`AdaSRGenerator.source_state`,
`driving_keypoints`, `render`); this module batches and jits it. Loading weights is
`asrth_jax.model_loading`. This module imports neither TensorFlow nor clu (it runs
where only JAX is installed). `python -m asrth_jax.inference --config CFG` measures
seconds per frame.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asrth_jax.models import adasr
from asrth_jax.models.head_pose import transform_keypoints


class SourceState(NamedTuple):
    """What one source image contributes to every frame (batch axis of 1)."""

    feature_3d: jax.Array  # (1, D, H/4, W/4, C)
    kp_canonical: jax.Array  # (1, K, 3)
    kp_source: jax.Array  # (1, K, 3)
    he_source: dict[str, jax.Array]


class Motion(NamedTuple):
    """Per-video motion settings, as arrays so changing them never recompiles."""

    kp_initial: jax.Array  # (1, K, 3) driving keypoints of the initial frame
    scale: jax.Array  # () movement scale (1 without adapt_scale)
    angles: jax.Array  # (3,) yaw, pitch, roll overrides in degrees
    override: jax.Array  # (3,) bool: which of the angles replace the estimate
    relative: bool  # static


def _to_float(frames: jax.Array) -> jax.Array:
    if frames.dtype == jnp.uint8:
        return frames.astype(jnp.float32) / 255.0
    return frames.astype(jnp.float32)


def hull_area(points: np.ndarray) -> float:
    """Area of the 2D convex hull of (K, 2) points (0 when degenerate)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        return float(ConvexHull(np.asarray(points, np.float64)).volume)
    except (QhullError, ValueError):
        return 0.0


def movement_scale(kp_source: np.ndarray, kp_initial: np.ndarray) -> float:
    """sqrt(source hull area) / sqrt(initial driving hull area) of keypoints[..., :2]."""
    src = hull_area(np.asarray(kp_source).reshape(-1, 3)[:, :2])
    drv = hull_area(np.asarray(kp_initial).reshape(-1, 3)[:, :2])
    if src <= 0.0 or drv <= 0.0:
        return 1.0
    return float(np.sqrt(src) / np.sqrt(drv))


def normalized_keypoints(kp: np.ndarray) -> np.ndarray:
    """(K, 3) keypoints centred and scaled by sqrt(hull area of x, y) (find-best-frame)."""
    kp = np.asarray(kp, np.float64).copy()
    kp -= kp.mean(axis=0, keepdims=True)
    area = hull_area(kp[:, :2])
    if area > 0:
        kp[:, :2] /= np.sqrt(area)
    return kp


# Jitted bodies at module level with the graph definition static, so every Animator
# over the same architecture (and batch shape) shares one compiled program.
TRACE_COUNTS: collections.Counter = collections.Counter()


class _StaticGraph:
    """Hashable wrapper of an nnx GraphDef (GraphDefs holding lists are unhashable)."""

    def __init__(self, graphdef: Any):
        self.graphdef = graphdef
        self.key = hashlib.sha1(repr(graphdef).encode()).hexdigest()

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _StaticGraph) and other.key == self.key


def _encode_impl(graphdef, state, image):
    TRACE_COUNTS["encode"] += 1
    src = nnx.merge(graphdef.graphdef, state).source_state(_to_float(image))
    return SourceState(src["feature_3d"], src["kp_canonical"], src["kp"], src["he"])


def _model_source(src: SourceState) -> dict[str, Any]:
    """`SourceState` in the form `AdaSRGenerator.source_state` returns."""
    return {"feature_3d": src.feature_3d, "kp_canonical": src.kp_canonical,
            "kp": src.kp_source, "he": src.he_source}


def _driving_kp_impl(graphdef, state, frames, kp_canonical):
    """Driving keypoints with the source's canonical keypoints (no overrides)."""
    TRACE_COUNTS["driving_kp"] += 1
    model = nnx.merge(graphdef.graphdef, state)
    return model.driving_keypoints({"kp_canonical": kp_canonical}, _to_float(frames))[0]


def _frame_kp_impl(graphdef, state, frames):
    """Each frame's own transformed keypoints (its canonical kp and pose)."""
    TRACE_COUNTS["frame_kp"] += 1
    model = nnx.merge(graphdef.graphdef, state)
    x = _to_float(frames)
    return transform_keypoints(model.kp_detector(x), model.he_estimator(x))


def _render_impl(graphdef, state, src: SourceState, frames, kp_initial, scale, angles,
                 override, relative: bool, with_deformation: bool = False):
    TRACE_COUNTS["render_deformation" if with_deformation else "render"] += 1
    model = nnx.merge(graphdef.graphdef, state)
    source = _model_source(src)
    kp_driving, _ = model.driving_keypoints(source, _to_float(frames), (angles, override))
    if relative:
        kp_source = jnp.broadcast_to(src.kp_source, kp_driving.shape)
        kp_driving = kp_source + scale * (kp_driving - kp_initial)
    out = model.render(source, kp_driving)
    if with_deformation:  # evaluation only (motion metrics): a separate compilation
        return out["prediction"], kp_driving, out["deformation"]
    return out["prediction"], kp_driving


_encode = jax.jit(_encode_impl, static_argnums=0)
_driving_kp = jax.jit(_driving_kp_impl, static_argnums=0)
_frame_kp = jax.jit(_frame_kp_impl, static_argnums=0)
_render = jax.jit(_render_impl, static_argnums=0,
                  static_argnames=("relative", "with_deformation"))


class Animator:
    """Jitted source encoding and fixed-batch rendering for one generator side.

    `call_counts` counts calls of the jitted functions by this animator; the module's
    `TRACE_COUNTS` counts traces (= compilations) over all animators (tests use both).
    """

    def __init__(self, generator_side: adasr.AdaSRGenerator, batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        generator_side.eval()
        graphdef, self.state = nnx.split(generator_side)
        self.graphdef = _StaticGraph(graphdef)
        self.batch_size = int(batch_size)
        self.call_counts: collections.Counter = collections.Counter()

    # ------------------------------------------------------------------ host API
    def _batches(self, frames: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """Fixed-size batches; the last one is padded by repeating its final frame."""
        n, bs = len(frames), self.batch_size
        for start in range(0, n, bs):
            chunk = np.asarray(frames[start:start + bs])
            valid = len(chunk)
            if valid < bs:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - valid, axis=0)])
            yield chunk, valid

    def _map_batches(self, fn: Callable, frames: np.ndarray, *args) -> np.ndarray:
        outs = [np.asarray(fn(self.graphdef, self.state, chunk, *args))[:valid]
                for chunk, valid in self._batches(frames)]
        return np.concatenate(outs, axis=0)

    def encode_source(self, image: np.ndarray) -> SourceState:
        """(H, W, 3) or (1, H, W, 3) image (uint8 or float [0, 1]) -> SourceState."""
        image = np.asarray(image)
        if image.ndim == 3:
            image = image[None]
        self.call_counts["encode"] += 1
        return _encode(self.graphdef, self.state, image)

    def driving_keypoints(self, src: SourceState, frames: np.ndarray) -> np.ndarray:
        """(T, K, 3) driving keypoints (source canonical kp, driving pose/expression)."""
        self.call_counts["driving_kp"] += 1
        return self._map_batches(_driving_kp, np.asarray(frames), src.kp_canonical)

    def frame_keypoints(self, frames: np.ndarray) -> np.ndarray:
        """(T, K, 3) keypoints of each frame from its own canonical kp and pose."""
        self.call_counts["frame_kp"] += 1
        return self._map_batches(_frame_kp, np.asarray(frames))

    def prepare_motion(self, src: SourceState, initial_frame: np.ndarray | None = None, *,
                       relative: bool = True, adapt_scale: bool = False,
                       yaw: float | None = None, pitch: float | None = None,
                       roll: float | None = None) -> Motion:
        """Per-video motion: the initial driving keypoints and the movement scale.

        `initial_frame` (H, W, 3) is needed for relative motion (usually driving frame 0).
        """
        if relative:
            if initial_frame is None:
                raise ValueError("relative motion needs the initial driving frame")
            kp_initial = self.driving_keypoints(src, np.asarray(initial_frame)[None])[:1]
            scale = movement_scale(np.asarray(src.kp_source[0]), kp_initial[0]) \
                if adapt_scale else 1.0
        else:
            kp_initial = np.zeros(src.kp_source.shape, np.float32)
            scale = 1.0
        angles = [0.0 if a is None else float(a) for a in (yaw, pitch, roll)]
        override = [a is not None for a in (yaw, pitch, roll)]
        return Motion(jnp.asarray(kp_initial, jnp.float32), jnp.asarray(scale, jnp.float32),
                      jnp.asarray(angles, jnp.float32), jnp.asarray(override), bool(relative))

    def render_batches(self, src: SourceState, frames: np.ndarray, motion: Motion,
                       return_keypoints: bool = False) -> Iterator[Any]:
        """Yields (T_b, H, W, 3) float32 predictions batch by batch (for progress bars).

        The next batch is dispatched before the current one is copied to the host, so
        device work overlaps with the caller's encoding/writing.
        """
        pending = None
        for chunk, valid in self._batches(frames):
            self.call_counts["render"] += 1
            out = _render(self.graphdef, self.state, src, chunk, motion.kp_initial, motion.scale,
                               motion.angles, motion.override, relative=motion.relative)
            if pending is not None:
                yield self._fetch(pending, return_keypoints)
            pending = (out, valid)
        if pending is not None:
            yield self._fetch(pending, return_keypoints)

    @staticmethod
    def _fetch(pending, return_keypoints: bool):
        (pred, kp), valid = pending
        pred = np.asarray(pred)[:valid]
        return (pred, np.asarray(kp)[:valid]) if return_keypoints else pred

    def render(self, src: SourceState, frames: np.ndarray, motion: Motion,
               return_keypoints: bool = False) -> Any:
        """(T, H, W, 3) float32 predictions (and (T, K, 3) keypoints used, if asked)."""
        parts = list(self.render_batches(src, frames, motion, return_keypoints))
        if return_keypoints:
            return (np.concatenate([p for p, _ in parts]), np.concatenate([k for _, k in parts]))
        return np.concatenate(parts)

    def render_with_deformation(self, src: SourceState, frames: np.ndarray, motion: Motion
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T, H, W, 3) predictions, (T, K, 3) keypoints and the (T, D, H', W', 3)
        deformation fields that produced them, for the motion metrics
        (`asrth_jax.motion_metrics`). Its own compiled program: `render` stays as fast."""
        preds, kps, fields = [], [], []
        for chunk, valid in self._batches(frames):
            self.call_counts["render_deformation"] += 1
            out = _render(self.graphdef, self.state, src, chunk, motion.kp_initial, motion.scale,
                          motion.angles, motion.override, relative=motion.relative,
                          with_deformation=True)
            for acc, value in zip((preds, kps, fields), out, strict=True):
                acc.append(np.asarray(value)[:valid])
        return np.concatenate(preds), np.concatenate(kps), np.concatenate(fields)

    def best_frame(self, source: np.ndarray, frames: np.ndarray) -> int:
        """Driving frame whose normalised keypoints best match the source's."""
        kp_src = normalized_keypoints(self.frame_keypoints(np.asarray(source)[None])[0])
        kp_drv = self.frame_keypoints(frames)
        dists = [float(np.square(kp_src - normalized_keypoints(k)).sum()) for k in kp_drv]
        return int(np.argmin(dists))


def make_animator(generator_side: adasr.AdaSRGenerator, batch_size: int = 1) -> Animator:
    """The inference object for `generator_side` (set to eval mode) and a batch size."""
    return Animator(generator_side, batch_size)


# ---------------------------------------------------------------------- speed
def measure_seconds_per_frame(generator_side: adasr.AdaSRGenerator, image_size: int,
                              batch_size: int, num_batches: int = 3,
                              warmup_batches: int = 1, seed: int = 0) -> dict[str, float]:
    """Steady-state seconds per driving frame (pose + keypoints + generator), source once.

    Frames are random uint8; the first `warmup_batches` (compilation) are not timed.
    """
    animator = make_animator(generator_side, batch_size)
    rng = np.random.default_rng(seed)
    src = animator.encode_source(rng.integers(0, 256, (image_size, image_size, 3), np.uint8))
    frames = rng.integers(0, 256, (batch_size, image_size, image_size, 3), np.uint8)
    motion = animator.prepare_motion(src, frames[0], relative=True)
    t0 = time.perf_counter()
    for _ in range(warmup_batches):
        animator.render(src, frames, motion)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(num_batches):
        t0 = time.perf_counter()
        animator.render(src, frames, motion)
        times.append(time.perf_counter() - t0)
    per_frame = [t / batch_size for t in times]
    return {"batch_size": batch_size, "seconds_per_frame": float(np.median(per_frame)),
            "min_seconds_per_frame": float(np.min(per_frame)),
            "first_batch_seconds": compile_s, "timed_batches": num_batches}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="python -m asrth_jax.inference",
        description="Measure steady-state inference seconds per frame (random weights).")
    parser.add_argument("--config", required=True, help="config file, e.g. configs/vox.py")
    parser.add_argument("--batch-sizes", default="1", help="comma-separated, e.g. 1,2,4")
    parser.add_argument("--batches", type=int, default=3, help="timed batches per size")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args(argv)
    from asrth_jax import cli_args
    from asrth_jax.config_lib import ConfigError, load_config_file

    try:
        config = load_config_file(args.config)
    except ConfigError as exc:
        raise cli_args.fail(str(exc)) from None
    model = adasr.build_generator(config.model, dtype=args.dtype)
    results = []
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        res = measure_seconds_per_frame(model, config.image_size, bs, args.batches)
        res.update(config=args.config, image_size=config.image_size, dtype=args.dtype,
                   backend=jax.default_backend())
        print(json.dumps(res), flush=True)
        results.append(res)
    return results


if __name__ == "__main__":
    main()
