"""Face-centred square crops with a box that stays fixed over a clip (FOMM convention).

Talking-head models expect the face at a fixed place and scale; a box that follows
the face frame by frame would bake camera shake into the data. So, like FOMM's
``crop-video.py``, we detect faces on a few frames, join the detections into one
"tube" box, enlarge it, make it square, keep it fixed for a chunk of frames
(by default the whole clip) and resize with anti-aliasing (``cv2.INTER_AREA``).

Detection uses OpenCV's Haar cascade (``cv2.data.haarcascades``) when the
installed OpenCV provides it. OpenCV 5 wheels no longer ship ``CascadeClassifier``
or the cascade files, so a skin-colour detector (YCrCb thresholds, largest blob,
cut below the chin) is the fallback; it needs no model file and is good enough for
the single, roughly centred speaker of talking-head clips.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache

import cv2
import numpy as np

from data_pipelines import face_mesh


class NoFaceError(ValueError):
    """No face was detected where a face crop was required."""


Box = tuple[int, int, int, int]  # (left, top, right, bottom), pixels, exclusive right/bottom
Detector = Callable[[np.ndarray], list[Box]]


@lru_cache(maxsize=1)
def _haar_cascade():
    """The frontal-face Haar cascade, or None when this OpenCV build lacks it."""
    if not hasattr(cv2, "CascadeClassifier"):
        return None
    base = getattr(getattr(cv2, "data", None), "haarcascades", "")
    path = os.path.join(base, "haarcascade_frontalface_default.xml")
    if not os.path.exists(path):
        return None
    cascade = cv2.CascadeClassifier(path)
    return None if cascade.empty() else cascade


def haar_detector_available() -> bool:
    return _haar_cascade() is not None


def detect_faces_haar(frame: np.ndarray) -> list[Box]:
    """Faces in one RGB frame with OpenCV's Haar cascade (empty if unavailable)."""
    cascade = _haar_cascade()
    if cascade is None:
        return []
    gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    min_side = max(24, min(frame.shape[:2]) // 8)
    found = cascade.detectMultiScale(gray, 1.1, 5, minSize=(min_side, min_side))
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]


def detect_faces_skin(frame: np.ndarray) -> list[Box]:
    """Largest skin-coloured blob as a face box, cut to a face aspect ratio.

    Skin occupies a compact Cr/Cb region for all skin tones; the blob may include
    the neck, so the box is limited to 1.25x its width below its top edge.
    """
    h, w = frame.shape[:2]
    ycc = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb)
    mask = cv2.inRange(ycc, (0, 133, 77), (255, 173, 127))
    # Beige walls pass the skin test too: drop pixels coloured like the frame border.
    b = max(2, min(h, w) // 20)
    border = np.concatenate([ycc[:b].reshape(-1, 3), ycc[:, :b].reshape(-1, 3),
                             ycc[:, -b:].reshape(-1, 3)]).astype(np.float32)
    bg = np.median(border, axis=0)
    diff = np.abs(ycc.astype(np.float32) - bg)
    mask[(diff[..., 1] < 5) & (diff[..., 2] < 5) & (diff[..., 0] < 30)] = 0
    k = max(3, min(h, w) // 64) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return []
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh, area = (int(v) for v in stats[best])
    if area < 0.01 * h * w:
        return []
    bh = min(bh, int(1.25 * bw))
    return [(x, y, x + bw, y + bh)]


def default_detector(frame: np.ndarray) -> list[Box]:
    """Haar cascade when available, skin colour otherwise."""
    if haar_detector_available():
        return detect_faces_haar(frame)
    return detect_faces_skin(frame)


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _largest(boxes: list[Box]) -> Box:
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))


def face_crop_box(
    frames: np.ndarray,
    *,
    increase_area: float = 0.3,
    num_probe_frames: int = 12,
    detector: Detector | None = None,
    require_face: bool = False,
) -> Box:
    """One square crop box (left, top, right, bottom) for a clip of RGB frames (T, H, W, 3).

    Detects faces on ``num_probe_frames`` evenly spaced frames, drops detections that
    disagree with the median box (false positives), joins the rest into a tube box,
    enlarges it and squares it inside the frame (``box_from_detections``). Without any
    detection the centred square is used, or NoFaceError is raised when ``require_face``.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"face_crop_box expects RGB frames (T, H, W, 3), got {frames.shape}")
    detect = detector or default_detector
    t, h, w = frames.shape[:3]
    probe = np.unique(np.linspace(0, t - 1, num=min(t, num_probe_frames)).round().astype(int))
    boxes = [_largest(found) for i in probe if (found := detect(frames[i]))]
    if not boxes:
        if require_face:
            raise NoFaceError(f"no face found on any of {len(probe)} probed frames")
        side = min(h, w)
        return _square(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2), h, w)
    return box_from_detections(boxes, h, w, increase_area=increase_area)


def box_from_detections(boxes: list[Box], h: int, w: int, *, increase_area: float = 0.3
                        ) -> Box:
    """One square crop box from the face boxes of a clip in an (h, w) frame: detections
    that disagree with the median box (false positives) are dropped, the rest joined into
    a tube box, enlarged by ``increase_area`` on each side (FOMM's aspect-preserving
    rule) and squared inside the frame."""
    median = tuple(int(v) for v in np.median(np.array(boxes), axis=0))
    kept = [b for b in boxes if _iou(b, median) > 0.3] or [median]
    arr = np.array(kept)
    left, top = arr[:, 0].min(), arr[:, 1].min()
    right, bot = arr[:, 2].max(), arr[:, 3].max()
    bw, bh = max(1, right - left), max(1, bot - top)
    # FOMM: enlarge so the box keeps the face and becomes closer to square.
    wi = max(increase_area, ((1 + 2 * increase_area) * bh - bw) / (2 * bw))
    hi = max(increase_area, ((1 + 2 * increase_area) * bw - bh) / (2 * bh))
    box = (int(left - wi * bw), int(top - hi * bh), int(right + wi * bw), int(bot + hi * bh))
    return _square(box, h, w)


def _square(box: Box, h: int, w: int) -> Box:
    """Square box of side max(box w, box h) (at most the frame) shifted inside the frame."""
    left, top, right, bot = box
    side = min(max(right - left, bot - top), h, w)
    cx, cy = (left + right) / 2.0, (top + bot) / 2.0
    x0 = int(round(min(max(cx - side / 2.0, 0), w - side)))
    y0 = int(round(min(max(cy - side / 2.0, 0), h - side)))
    return (x0, y0, x0 + side, y0 + side)


def apply_box(frames: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Crop every frame to ``box`` and resize to size x size (INTER_AREA when shrinking)."""
    left, top, right, bot = box
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        crop = frame[top:bot, left:right]
        interp = cv2.INTER_AREA if crop.shape[0] >= size else cv2.INTER_CUBIC
        out[i] = cv2.resize(crop, (size, size), interpolation=interp)
    return out


def crop_video(
    frames: np.ndarray,
    size: int,
    *,
    chunk_frames: int | None = None,
    increase_area: float = 0.3,
    detector: Detector | None = None,
    require_face: bool = False,
) -> np.ndarray:
    """Face-cropped (T, size, size, 3) uint8 clip; one fixed box per chunk of frames.

    ``chunk_frames=None`` keeps one box for the whole clip (no jitter at all); a
    number lets long clips with a moving speaker re-centre every chunk. With
    ``require_face`` a chunk without any detected face raises NoFaceError instead of
    falling back to the centred square.
    """
    frames = np.asarray(frames)
    chunk = chunk_frames or len(frames)
    parts = []
    for start in range(0, len(frames), chunk):
        part = frames[start : start + chunk]
        try:
            box = face_crop_box(part, increase_area=increase_area, detector=detector,
                                require_face=require_face)
        except NoFaceError as err:
            raise NoFaceError(f"frames {start}-{start + len(part) - 1}: {err}") from None
        parts.append(apply_box(part, box, size))
    return np.concatenate(parts, axis=0)


def mediapipe_detector(frame: np.ndarray) -> list[Box]:
    """The face box of MediaPipe's BlazeFace (`face_mesh`, bundled model files, run
    offline), or [] without a face. Far more reliable on real footage than the Haar
    cascade or skin colour; raises `face_mesh.FaceMeshUnavailableError` where LiteRT is
    missing."""
    found = face_mesh.default_landmarker().detect(np.ascontiguousarray(frame))
    if found is None:
        return []
    cx, cy, bw, bh = (float(v) for v in found[0])
    return [(int(round(cx - bw / 2)), int(round(cy - bh / 2)), int(round(cx + bw / 2)),
             int(round(cy + bh / 2)))]


def face_tracks(frames: np.ndarray, *, detector: Detector | None = None,
                min_frames: int = 16, min_iou: float = 0.25, increase_area: float = 0.3
                ) -> list[tuple[int, int, Box]]:
    """FOMM's tubes: (start, stop, crop box) of every run of consecutive frames whose face
    stays in place, each with one fixed box over the run (`box_from_detections`).

    Every frame is detected; a run ends where the face is lost or where its box overlaps
    the run's first box by less than ``min_iou`` (a cut, or a speaker who walked off),
    like `crop-video.py` of FOMM. Runs shorter than ``min_frames`` are dropped."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"face_tracks expects RGB frames (T, H, W, 3), got {frames.shape}")
    detect = detector or mediapipe_detector
    h, w = frames.shape[1:3]
    tracks: list[tuple[int, int, Box]] = []
    run: list[Box] = []
    start = 0

    def close(stop: int) -> None:
        if stop - start >= min_frames:
            tracks.append((start, stop, box_from_detections(run, h, w,
                                                            increase_area=increase_area)))

    for t, frame in enumerate(frames):
        found = detect(frame)
        box = _largest(found) if found else None
        if run and (box is None or _iou(box, run[0]) < min_iou):
            close(t)
            run = []
        if box is not None:
            if not run:
                start = t
            run.append(box)
    if run:
        close(len(frames))
    return tracks
