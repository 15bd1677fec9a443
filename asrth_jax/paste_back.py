"""Put an animated face crop back into the full-resolution portrait it was cut from.

`--crop` cuts one square box (`data_pipelines.face_crop`, axis-aligned, inside the
image) and resizes it to the model's size; the inverse is a resize back to the box's
side and a blend at the box's place. The blend weight is 1 in the box's interior and
falls linearly to 0 over a feather band along the box's edges, so the seam between
the generated face and the untouched portrait is not a hard line. Pixels outside the
box are the portrait's own.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_pipelines.face_crop import Box

DEFAULT_FEATHER = 0.1  # band width as a fraction of the box side


def feather_width(side: int, feather: float = DEFAULT_FEATHER) -> int:
    """Width in pixels of the blend band of a box of `side` pixels (at least 1)."""
    return max(1, int(round(feather * side)))


def feather_mask(side: int, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """(side, side) float32 weights: 1 inside, linear ramp to ~0 over the edge band."""
    width = feather_width(side, feather)
    centres = np.arange(side, dtype=np.float32) + 0.5
    edge = np.minimum(centres, side - centres)  # distance of each pixel centre to the edge
    ramp = np.clip(edge / width, 0.0, 1.0)
    return np.minimum(ramp[:, None], ramp[None, :])


def paste(portrait: np.ndarray, face: np.ndarray, box: Box,
          feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """The portrait (H, W, 3) float [0, 1] with `face` (s, s, 3) blended into `box`.

    `box` is (left, top, right, bottom) of a square inside the portrait, the one the
    face's source crop was taken from.
    """
    left, top, right, bottom = box
    side = right - left
    h, w = portrait.shape[:2]
    if side <= 0 or bottom - top != side or left < 0 or top < 0 or right > w or bottom > h:
        raise ValueError(f"paste box {box} is not a square inside the {w}x{h} portrait")
    face = np.asarray(face, np.float32)
    interp = cv2.INTER_CUBIC if side > face.shape[0] else cv2.INTER_AREA
    resized = np.clip(cv2.resize(face, (side, side), interpolation=interp), 0.0, 1.0)
    mask = feather_mask(side, feather)[..., None]
    out = np.array(portrait, np.float32, copy=True)
    region = out[top:bottom, left:right]
    out[top:bottom, left:right] = region * (1.0 - mask) + resized * mask
    return out
