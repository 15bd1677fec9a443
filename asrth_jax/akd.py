"""AKD, the FOMM protocol's average keypoint distance, from an offline face-landmark detector.

AKD is the mean pixel distance between the face landmarks of the driving frame and of
the generated frame, both at 256x256. Landmarks come from MediaPipe's BlazeFace and
FaceMesh run offline by LiteRT (`data_pipelines.face_mesh`, model files shipped there).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from data_pipelines import face_mesh
from data_pipelines.face_mesh import LandmarkFn, Landmarks

AKD_SIZE = face_mesh.FRAME_SIZE  # FOMM protocol: distances in pixels at 256x256


def status() -> str | None:
    """None when AKD can be measured here, else why not (one line)."""
    reason = face_mesh.unavailable_reason()
    return None if reason is None else f"AKD unavailable: {reason}"


def at_akd_size(image: np.ndarray) -> np.ndarray:
    """One (H, W, 3) frame (uint8, or float in [0, 1]) as uint8 at 256x256."""
    image = face_mesh.as_uint8(image)
    if image.shape[:2] == (AKD_SIZE, AKD_SIZE):
        return image
    shrink = image.shape[0] > AKD_SIZE
    return cv2.resize(image, (AKD_SIZE, AKD_SIZE),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def face_landmarks(image: np.ndarray) -> Landmarks:
    """(468, 2) landmarks of one frame, in pixels of its 256x256 resize, or None."""
    return face_mesh.default_landmarker().landmarks(at_akd_size(image))


def landmarks_of(images: Sequence[np.ndarray] | np.ndarray,
                 landmarks: LandmarkFn = face_landmarks) -> list[Landmarks]:
    return [landmarks(image) for image in images]


def average_keypoint_distance(kp_a: Landmarks, kp_b: Landmarks) -> float:
    """Mean Euclidean distance between matching (L, 2) landmarks; NaN if one is missing."""
    if kp_a is None or kp_b is None:
        return float("nan")
    return float(np.linalg.norm(np.asarray(kp_a) - np.asarray(kp_b), axis=-1).mean())


def distances(kps_a: Sequence[Landmarks], kps_b: Sequence[Landmarks]) -> np.ndarray:
    """(N,) AKD between two lists of landmarks (NaN where a face is missing)."""
    return np.array([average_keypoint_distance(a, b) for a, b in zip(kps_a, kps_b, strict=True)],
                    np.float64)


def akd(pred: np.ndarray, target: np.ndarray,
        landmarks: LandmarkFn = face_landmarks) -> np.ndarray:
    """(N,) AKD in pixels at 256x256 between two batches of frames (NaN: no face)."""
    return distances(landmarks_of(pred, landmarks), landmarks_of(target, landmarks))
