"""Degradation settings (no OpenCV or Grain import: configs load anywhere).

The transforms that use them are in `data_pipelines/degradation.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ml_collections

from data_pipelines.kernels import KERNEL_TYPES

PRESETS = ("none", "downsample", "realesrgan2")


def _stage_config(
    *, resize_probs: Sequence[float], resize_range: Sequence[float], blur_prob: float
) -> ml_collections.ConfigDict:
    """Parameters of one Real-ESRGAN degradation round."""
    return ml_collections.ConfigDict(
        {
            "blur_prob": blur_prob,
            "kernel_sizes": [3, 5],
            "kernel_types": list(KERNEL_TYPES),
            "kernel_probs": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
            "sigma_x_range": [0.1, 0.5],
            "sigma_y_range": [0.1, 0.5],
            "rotation_range": [-math.pi, math.pi],
            "betag_range": [0.5, 4.0],
            "betap_range": [1.0, 2.0],
            "sinc_prob": 0.1,
            # Probabilities of (up, down, keep) and the scale range of this round.
            "resize_probs": list(resize_probs),
            "resize_range": list(resize_range),
            "interpolations": ["area", "bilinear", "bicubic"],
            "gaussian_noise_prob": 0.5,
            "noise_sigma_range": [1.0, 10.0],  # in 8-bit levels
            "poisson_scale_range": [0.05, 1.0],
            "gray_noise_prob": 0.4,
            "jpeg_range": [10, 25],
        }
    )


def default_degradation_config(preset: str = "realesrgan2") -> ml_collections.ConfigDict:
    """All degradation knobs with reference defaults; ``preset`` picks the chain."""
    if preset not in PRESETS:
        raise ValueError(f"unknown degradation preset {preset!r}; choose one of {PRESETS}")
    return ml_collections.ConfigDict(
        {
            "preset": preset,
            "downsample": {
                "scale_range": [0.25, 1.0],
                "down_interpolations": ["area", "bilinear", "bicubic"],
                "up_interpolations": ["bilinear", "bicubic"],
            },
            "realesrgan2": {
                "stage1": _stage_config(
                    resize_probs=[0.2, 0.7, 0.1], resize_range=[0.5, 1.2], blur_prob=1.0
                ),
                "stage2": _stage_config(
                    resize_probs=[0.3, 0.4, 0.3], resize_range=[0.3, 1.2], blur_prob=0.8
                ),
                # Bound on the cumulative scale of both rounds relative to the original
                # (Real-ESRGAN's dataset-level range).
                "scale_clip_range": [0.15, 1.5],
                "final_sinc_prob": 0.8,
                "final_sinc_kernel_sizes": [3, 5],
                "final_interpolations": ["area", "bilinear", "bicubic"],
            },
        }
    )


# ----------------------------------------------------------------------------- ops
# Each op maps a float32 HxWx3 image in [0, 1] (and the rng) to a new image. They
# are small so presets stay readable and other chains can be composed from them.
