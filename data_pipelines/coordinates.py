"""Coordinate frames shared by the data and the model, without the renderer's
dependencies (the train step reads landmarks in the keypoint frame through it)."""

from __future__ import annotations

import numpy as np


def keypoint_frame(pixels: np.ndarray, size) -> np.ndarray:
    """Pixel (x, y) -> the keypoint frame: [-1, 1] over the pixel centres 0 .. size - 1,
    as `make_coordinate_grid` spans them (numpy or jax arrays; `size` an int or per-axis
    (width, height))."""
    return 2.0 * pixels / (size - 1) - 1.0
