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
adapt_scale, sqrt(3-D hull volume of kp_source) / sqrt(3-D hull volume of
kp_driving_initial) (`movement_scale`); absolute: kp = kp_driving. Free-view
yaw/pitch/roll (degrees) replace the estimated driving angles (the initial driving
keypoints keep the estimate, as in the reference).

The encode/drive maths is the model's (`AdaSRGenerator.source_state`,
`driving_keypoints`, `render`); this module batches and jits it. Loading weights is
`asrth_jax.model_loading`; its speed is measured by `python -m asrth_jax.benchmark
--inference-only`. This module imports neither TensorFlow nor clu (it runs where only
JAX is installed).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asrth_jax import errors
from asrth_jax.models import adasr


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


class MovementScaleError(errors.AsrthError, ValueError):
    """Adapting the movement scale is impossible for these keypoints (one line with the fix)."""


def _hull_volume(points: np.ndarray, which: str) -> float:
    from scipy.spatial import ConvexHull, QhullError

    try:
        volume = float(ConvexHull(np.asarray(points, np.float64).reshape(-1, 3)).volume)
    except (QhullError, ValueError):
        volume = 0.0
    if not volume > 0.0:
        raise MovementScaleError(
            f"adapt movement scale: the {which} keypoints span no volume (flat or too few "
            "points, so their convex hull is degenerate); animate without --adapt-scale")
    return volume


def movement_scale(kp_source: np.ndarray, kp_initial: np.ndarray) -> float:
    """sqrt(V_source) / sqrt(V_initial), V the volume of the 3-D convex hull of the (K, 3)
    keypoints: the reference's `normalize_kp` (AdaSR `animate.py`, from face-vid2vid)
    applies `ConvexHull(...).volume` to (K, 3) points, so this is a volume, not the area
    of x, y (it grows as size^1.5).

    A hull without volume (coplanar or fewer than 4 keypoints), where the reference's
    Qhull raises, is `MovementScaleError` naming the fix."""
    return float(np.sqrt(_hull_volume(kp_source, "source")) /
                 np.sqrt(_hull_volume(kp_initial, "initial driving")))


# Jitted bodies at module level with the graph definition a static argument (hashable:
# `blocks.conv` keeps padding as tuples), so every Animator over the same architecture
# (and batch shape) shares one compiled program.
def _encode_impl(graphdef, state, image, image_lq):
    model = nnx.merge(graphdef, state)
    src = model.source_state(_to_float(image), None if image_lq is None else _to_float(image_lq))
    return SourceState(src["feature_3d"], src["kp_canonical"], src["kp"], src["he"])


def _model_source(src: SourceState) -> dict[str, Any]:
    """`SourceState` in the form `AdaSRGenerator.source_state` returns."""
    return {"feature_3d": src.feature_3d, "kp_canonical": src.kp_canonical,
            "kp": src.kp_source, "he": src.he_source}


def _driving_kp_impl(graphdef, state, frames, kp_canonical):
    """Driving keypoints with the source's canonical keypoints (no overrides)."""
    model = nnx.merge(graphdef, state)
    return model.driving_keypoints({"kp_canonical": kp_canonical}, _to_float(frames))[0]


def _render_impl(graphdef, state, src: SourceState, frames, kp_initial, scale, angles,
                 override, relative: bool, with_deformation: bool = False):
    model = nnx.merge(graphdef, state)
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
_render = jax.jit(_render_impl, static_argnums=0,
                  static_argnames=("relative", "with_deformation"))


class Animator:
    """Jitted source encoding and fixed-batch rendering for one generator side.

    `call_counts` counts calls of the jitted functions by this animator.
    """

    def __init__(self, generator_side: adasr.AdaSRGenerator, batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        generator_side.eval()
        self.graphdef, self.state = nnx.split(generator_side)
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

    def encode_source(self, image: np.ndarray, image_lq: np.ndarray | None = None
                      ) -> SourceState:
        """(H, W, 3) or (1, H, W, 3) image (uint8 or float [0, 1]) -> SourceState.

        `image_lq` (same shape), where given, is what the appearance is encoded from
        (AdaSR's degraded source); keypoints and pose always come from `image`."""
        image, image_lq = (None if x is None else np.asarray(x) for x in (image, image_lq))
        if image.ndim == 3:
            image = image[None]
        if image_lq is not None and image_lq.ndim == 3:
            image_lq = image_lq[None]
        self.call_counts["encode"] += 1
        return _encode(self.graphdef, self.state, image, image_lq)

    def driving_keypoints(self, src: SourceState, frames: np.ndarray) -> np.ndarray:
        """(T, K, 3) driving keypoints (source canonical kp, driving pose/expression)."""
        self.call_counts["driving_kp"] += 1
        return self._map_batches(_driving_kp, np.asarray(frames), src.kp_canonical)

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

    def lower_render(self, src: SourceState, frames: np.ndarray, motion: Motion
                     ) -> jax.stages.Lowered:
        """The renderer `render` runs on one batch of `frames` (`batch_size` of them),
        lowered ahead of time: compile it for its cost analysis (the benchmark)."""
        return _render.lower(self.graphdef, self.state, src, np.asarray(frames),
                             motion.kp_initial, motion.scale, motion.angles, motion.override,
                             relative=motion.relative)

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


def make_animator(generator_side: adasr.AdaSRGenerator, batch_size: int = 1) -> Animator:
    """The inference object for `generator_side` (set to eval mode) and a batch size."""
    return Animator(generator_side, batch_size)
