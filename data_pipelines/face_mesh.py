"""Offline face landmarks: MediaPipe's BlazeFace and FaceMesh run by LiteRT.

BlazeFace gives the face box and eye keypoints; FaceMesh gives 468 points in a square
crop of 1.5x the box, rotated so the eyes are level. The model files ship inside this
package (`assets/face/`, see its README): nothing is downloaded. Users: the face box
of `face_crop.mediapipe_detector`, the teachers' landmarks of `prepare --track-faces`,
and `asrth_jax.akd` (the AKD metric) and `asrth_jax.best_frame`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from data_pipelines.errors import AsrthError

# Landmarks are taken on 256x256 frames: FOMM's AKD protocol measures there, and the
# teachers' landmarks of `prepare --track-faces` are taken at the same scale.
FRAME_SIZE = 256
MODEL_DIR = Path(__file__).resolve().parent / "assets" / "face"
DETECTOR_FILE = "face_detection_short_range.tflite"
LANDMARK_FILE = "face_landmark.tflite"
NUM_LANDMARKS = 468

_DETECT_SIZE = 128
_LANDMARK_SIZE = 192
_MIN_SCORE = 0.5  # MediaPipe's thresholds for a face box and for the mesh's face flag
_CLUSTER_IOU = 0.3  # boxes merged (score-weighted) with the best one, as weighted NMS does
_ROI_SCALE = 1.5

Landmarks = np.ndarray | None
LandmarkFn = Callable[[np.ndarray], Landmarks]


class FaceMeshUnavailableError(AsrthError, RuntimeError):
    """The landmark detector cannot run here; `reason` is the one-line why and fix."""

    def __init__(self, reason: str):
        super().__init__(f"face landmarks unavailable: {reason}")
        self.reason = reason


def _interpreter(path: Path, num_threads: int):
    try:
        # LiteRT is imported only where landmarks are asked for: without it, everything
        # else of data_pipelines (and evaluate without AKD) still runs.
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as err:
        raise FaceMeshUnavailableError(f"the LiteRT interpreter is not installed ({err}); "
                                       "pip install ai-edge-litert") from None
    if not path.is_file():
        raise FaceMeshUnavailableError(f"face model {path} is missing; reinstall asrth-jax")
    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def _ssd_anchors() -> np.ndarray:
    """(896, 2) anchor centres of BlazeFace short range: strides 8, 16, 16, 16 at 128 px;
    each layer puts 2 anchors per cell and layers of one stride share a grid."""
    anchors = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = _DETECT_SIZE // stride
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], -1)
        anchors.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(anchors).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (cx, cy, w, h) box with many."""
    lo = np.maximum(box[:2] - box[2:] / 2, boxes[:, :2] - boxes[:, 2:] / 2)
    hi = np.minimum(box[:2] + box[2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    return inter / (np.prod(box[2:]) + np.prod(boxes[:, 2:], axis=-1) - inter + 1e-12)


def as_uint8(image: np.ndarray) -> np.ndarray:
    """An image as uint8: unchanged if it is, else a float image in [0, 1] rounded."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class FaceLandmarker:
    """468 face landmarks (pixels) of the most confident face in an RGB image."""

    def __init__(self, model_dir: Path = MODEL_DIR, num_threads: int = 1):
        self._detector = _interpreter(Path(model_dir) / DETECTOR_FILE, num_threads)
        self._mesh = _interpreter(Path(model_dir) / LANDMARK_FILE, num_threads)
        self._anchors = _ssd_anchors()
        outs = self._detector.get_output_details()
        # regressors (1, 896, 16) and classificators (1, 896, 1), told apart by shape
        self._boxes_out = next(d["index"] for d in outs if d["shape"][-1] == 16)
        self._scores_out = next(d["index"] for d in outs if d["shape"][-1] == 1)
        outs = self._mesh.get_output_details()
        self._mesh_out = next(d["index"] for d in outs if d["shape"][-1] == 3 * NUM_LANDMARKS)
        self._flag_out = next(d["index"] for d in outs if d["shape"][-1] == 1)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Box (cx, cy, w, h) and eye keypoints (2, 2) in pixels, or None without a face."""
        h, w = image.shape[:2]
        side = max(h, w)
        pad_y, pad_x = (side - h) // 2, (side - w) // 2  # letterbox to a square
        square = cv2.copyMakeBorder(image, pad_y, side - h - pad_y, pad_x, side - w - pad_x,
                                    cv2.BORDER_CONSTANT, value=0)
        small = cv2.resize(square, (_DETECT_SIZE, _DETECT_SIZE), interpolation=cv2.INTER_AREA)
        tensor = small.astype(np.float32)[None] / 127.5 - 1.0
        self._detector.set_tensor(self._detector.get_input_details()[0]["index"], tensor)
        self._detector.invoke()
        raw = self._detector.get_tensor(self._boxes_out)[0]
        logits = np.clip(self._detector.get_tensor(self._scores_out)[0, :, 0], -80, 80)
        scores = 1.0 / (1.0 + np.exp(-logits))
        best = int(np.argmax(scores))
        if scores[best] < _MIN_SCORE:
            return None
        decoded = raw / _DETECT_SIZE
        decoded[:, 0:2] += self._anchors
        decoded[:, 4::2] += self._anchors[:, :1]
        decoded[:, 5::2] += self._anchors[:, 1:]
        cluster = (scores >= _MIN_SCORE) & (_iou(decoded[best, :4], decoded[:, :4])
                                            > _CLUSTER_IOU)
        weights = scores[cluster] / scores[cluster].sum()
        merged = (decoded[cluster] * weights[:, None]).sum(0) * side
        pad = np.array([pad_x, pad_y], np.float32)
        # keypoints 0 and 1 are the right and left eye (image left and right when upright)
        return (np.concatenate([merged[:2] - pad, merged[2:4]]),
                merged[4:8].reshape(2, 2) - pad)

    def landmarks(self, image: np.ndarray) -> Landmarks:
        """(468, 2) landmarks in pixels (x right, y down, pixel centres at +0.5), or None."""
        image = np.ascontiguousarray(as_uint8(image))
        found = self.detect(image)
        if found is None:
            return None
        box, eyes = found
        centre, size = box[:2], max(box[2], box[3]) * _ROI_SCALE
        eye_line = eyes[1] - eyes[0]
        norm = float(np.hypot(*eye_line))
        cos, sin = (eye_line / norm) if norm > 0 else (1.0, 0.0)
        # Crop pixel (u, v) -> image point centre + s R (u + .5 - 96, v + .5 - 96), R turning
        # the crop's x axis onto the eye line; OpenCV indexes pixel centres at integers.
        s = size / _LANDMARK_SIZE
        rot = s * np.array([[cos, -sin], [sin, cos]], np.float64)
        offset = centre - 0.5 + rot @ np.full(2, 0.5 - _LANDMARK_SIZE / 2)
        to_image = np.concatenate([rot, offset[:, None]], axis=1)
        crop = cv2.warpAffine(image, to_image, (_LANDMARK_SIZE, _LANDMARK_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self._mesh.set_tensor(self._mesh.get_input_details()[0]["index"],
                              crop.astype(np.float32)[None] / 255.0)
        self._mesh.invoke()
        flag = float(self._mesh.get_tensor(self._flag_out).ravel()[0])
        if 1.0 / (1.0 + math.exp(-flag)) < _MIN_SCORE:
            return None
        pts = self._mesh.get_tensor(self._mesh_out).reshape(NUM_LANDMARKS, 3)[:, :2]
        return (centre + (pts - _LANDMARK_SIZE / 2) @ rot.T).astype(np.float32)


# The face mesh points that stand for the synthetic heads' named landmarks
# (`data_pipelines.synthetic.LANDMARK_NAMES`, the same order, "left" = image left), so a
# landmark teacher, its flip augmentation and its motion loss read real faces exactly as
# they read synthetic ones. Eyes are the mean of their two corners.
TEACHER_MESH_POINTS = (
    (105,), (334,), (33, 133), (362, 263), (1,), (61,), (291,), (13,), (14,), (152,),
    (234,), (454,), (10,),
)


def teacher_landmarks(mesh: np.ndarray) -> np.ndarray:
    """(13, 2) teacher landmarks (`TEACHER_MESH_POINTS`) of (468, 2) mesh points."""
    mesh = np.asarray(mesh, np.float32)
    return np.stack([mesh[list(points)].mean(0) for points in TEACHER_MESH_POINTS])


@functools.cache
def default_landmarker() -> FaceLandmarker:
    return FaceLandmarker()


@functools.cache
def unavailable_reason() -> str | None:
    """None when the detector runs here, else why not and the fix (one line)."""
    try:
        default_landmarker()
    except FaceMeshUnavailableError as err:
        return err.reason
    except (RuntimeError, ValueError, OSError) as err:  # a model the interpreter rejects
        return f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    return None

