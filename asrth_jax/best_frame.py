"""The driving frame to animate from (`animate --find-best-frame`), by the reference's rule.

The reference (`find_best_frame` in AdaSR's `demo.py`, from FOMM) finds face_alignment's
68 2-D landmarks on the source and on every driving frame, centres each set on its mean,
divides it by the square root of its 2-D convex-hull area, and takes the driving frame
whose normalised landmarks have the smallest sum of squared differences to the source's
(the first such frame on a tie). Animation then runs backward and forward from it.

face_alignment needs downloaded weights, so here MediaPipe's 468 face-mesh points
(`asrth_jax.akd`, model files shipped in the package) stand in for its 68; the
normalisation and the distance are the reference's. Where the reference would crash,
this says so: a source without a face is `BestFrameError`, a driving frame without one is
passed over (and a video with no face in any frame is `BestFrameError`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from asrth_jax import akd, errors


class BestFrameError(errors.AsrthError, ValueError):
    """No best frame can be found (one line naming the problem and the fix)."""


def normalized_landmarks(points: np.ndarray) -> np.ndarray | None:
    """(L, 2) landmarks centred and divided by sqrt(area of their 2-D convex hull), as the
    reference's `normalize_kp` in `find_best_frame`; None when the hull has no area."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.asarray(points, np.float64)
    pts = pts - pts.mean(axis=0, keepdims=True)
    try:
        area = float(ConvexHull(pts[:, :2]).volume)  # a 2-D hull's "volume" is its area
    except (QhullError, ValueError):
        return None
    if not area > 0.0:
        return None
    pts[:, :2] /= math.sqrt(area)
    return pts


def best_frame_index(source: akd.Landmarks, frames: Sequence[akd.Landmarks]) -> int:
    """Index of the frame whose normalised landmarks are nearest the source's (smallest
    sum of squared differences; the first on a tie). None entries (no face) are passed
    over."""
    src = None if source is None else normalized_landmarks(source)
    if src is None:
        raise BestFrameError("--find-best-frame: no face found in the source portrait; "
                             "use a portrait with a visible face or drop --find-best-frame")
    best, best_distance = -1, math.inf
    for index, points in enumerate(frames):
        drv = None if points is None else normalized_landmarks(points)
        if drv is None:
            continue
        if drv.shape != src.shape:
            raise ValueError(f"frame {index} has {drv.shape} landmarks, the source "
                             f"{src.shape}: both must come from one detector")
        distance = float(np.square(src - drv).sum())
        if distance < best_distance:
            best, best_distance = index, distance
    if best < 0:
        raise BestFrameError(f"--find-best-frame: no face found in any of the {len(frames)} "
                             "driving frames; drop --find-best-frame")
    return best


def find_best_frame(source: np.ndarray, frames: Sequence[np.ndarray] | np.ndarray,
                    landmarks: akd.LandmarkFn | None = None) -> int:
    """The driving frame (index into `frames`) to animate from, given (H, W, 3) images
    (uint8 or float in [0, 1]). `landmarks` maps an image to its (L, 2) landmarks or None;
    by default MediaPipe's face mesh (`akd.face_landmarks`)."""
    if landmarks is None:
        reason = akd.status()
        if reason is not None:
            raise BestFrameError(f"--find-best-frame needs the face landmark detector: "
                                 f"{reason}")
        landmarks = akd.face_landmarks
    source_points = landmarks(source)
    if source_points is None:  # before the driving frames: fail fast
        best_frame_index(None, [])
    return best_frame_index(source_points, akd.landmarks_of(frames, landmarks))
