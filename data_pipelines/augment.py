"""FOMM's pair augmentations as one Grain random transform.

Both frames of a pair get the same horizontal flip and the same colour jitter
(FOMM's AllAugmentationTransform applies them per video), so the model cannot
learn colour or mirror changes as "motion". Time flip swaps source and driving,
which doubles the motion directions seen; only a pair that was not time-flipped
may be mirrored (the reference's RandomFlip).
"""

from __future__ import annotations

from typing import Any

import cv2
import grain
import ml_collections
import numpy as np

from data_pipelines.synthetic import MIRRORED_LANDMARKS


def _gray(x: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]


def color_jitter(
    frames: list[np.ndarray], rng: np.random.Generator, brightness: float, contrast: float,
    saturation: float, hue: float,
) -> list[np.ndarray]:
    """torchvision-style ColorJitter (random order of the four ops), same draw for all frames."""
    factors = {
        "brightness": rng.uniform(1 - brightness, 1 + brightness) if brightness else None,
        "contrast": rng.uniform(1 - contrast, 1 + contrast) if contrast else None,
        "saturation": rng.uniform(1 - saturation, 1 + saturation) if saturation else None,
        "hue": rng.uniform(-hue, hue) if hue else None,
    }
    order = rng.permutation(4)
    names = ("brightness", "contrast", "saturation", "hue")
    out = []
    for frame in frames:
        x = frame.astype(np.float32) * (1.0 / 255.0)
        for i in order:
            name, f = names[i], factors[names[i]]
            if f is None:
                continue
            if name == "brightness":
                x = x * f
            elif name == "contrast":
                x = (x - _gray(x).mean()) * f + _gray(x).mean()
            elif name == "saturation":
                g = _gray(x)
                x = (x - g) * f + g
            else:
                hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float input: H in [0, 360)
                hsv[..., 0] = (hsv[..., 0] + f * 360.0) % 360.0
                x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
            x = np.clip(x, 0.0, 1.0)
        out.append(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return out


class AugmentPair(grain.transforms.RandomMap):
    """Flip / time flip / colour jitter of a {'source', 'driving'} record."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        src, drv = element["source"], element["driving"]
        # The union of both frames' head masks: a time flip leaves it as it is.
        moving_mask = element.get("moving_mask")
        frame_index = element.get("frame_index")
        poses = [element.get("source_pose"), element.get("driving_pose")]
        centres = [element.get("source_centre"), element.get("driving_centre")]
        landmarks = [element.get("source_landmarks"), element.get("driving_landmarks")]
        if c.time_flip and rng.uniform() < 0.5:
            src, drv = drv, src
            poses, centres, landmarks = poses[::-1], centres[::-1], landmarks[::-1]
            if frame_index is not None:
                frame_index = frame_index[::-1].copy()
        # The reference mirrors only pairs it did not time-flip (its RandomFlip returns
        # early): with both on, 50% of pairs are time-flipped and 25% mirrored.
        elif c.flip and rng.uniform() < 0.5:
            src, drv = src[:, ::-1], drv[:, ::-1]
            if moving_mask is not None:
                moving_mask = moving_mask[:, ::-1]
            # A mirror image turns the head the other way: yaw and roll change sign.
            poses = [None if p is None else p * np.array([-1, 1, -1], np.float32)
                     for p in poses]
            # ... and moves its centre to -x (the keypoint frame is symmetric about 0).
            centres = [None if xy is None else xy * np.array([-1, 1], np.float32)
                       for xy in centres]
            # Landmark pixels mirror about the frame's middle and swap left for right.
            width = src.shape[1]
            landmarks = [None if xy is None else
                         xy[list(MIRRORED_LANDMARKS)] * np.array([-1, 1], np.float32)
                         + np.array([width - 1, 0], np.float32) for xy in landmarks]
        if c.brightness or c.contrast or c.saturation or c.hue:
            src, drv = color_jitter([src, drv], rng, c.brightness, c.contrast, c.saturation, c.hue)
        out = dict(element)
        out["source"] = np.ascontiguousarray(src)
        out["driving"] = np.ascontiguousarray(drv)
        if frame_index is not None:
            out["frame_index"] = frame_index
        if moving_mask is not None:
            out["moving_mask"] = np.ascontiguousarray(moving_mask)
        for key, value in zip(("source_pose", "driving_pose", "source_centre",
                               "driving_centre", "source_landmarks", "driving_landmarks"),
                              poses + centres + landmarks, strict=True):
            if value is not None:
                out[key] = value
        return out
