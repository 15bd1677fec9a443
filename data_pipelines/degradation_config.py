"""Degradation settings (no OpenCV or Grain import: configs load anywhere).

The transforms that use them are in `data_pipelines/degradation.py`. The
`realesrgan2` defaults are AdaSR's (reference `frames_dataset.py` kernels and
`modules/model.py` chain), which differ from Real-ESRGAN's own numbers: small
kernels, stage 2 resizes to an absolute size, and there is no JPEG inside stage 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ml_collections

from data_pipelines.errors import ConfigError
from data_pipelines.kernels import KERNEL_TYPES

PRESETS = ("none", "downsample", "realesrgan2")
INTERPOLATION_NAMES = ("area", "bilinear", "bicubic")
RESIZE_RELATIVE_TO = ("current", "original")
DRAW_PER = ("batch", "pair")


def _stage_config(
    *,
    blur_prob: float,
    betap_range: Sequence[float],
    resize_probs: Sequence[float],
    resize_relative_to: str,
    jpeg_prob: float,
) -> ml_collections.ConfigDict:
    """Parameters of one degradation round: blur -> resize -> noise (-> JPEG)."""
    return ml_collections.ConfigDict(
        {
            "blur_prob": blur_prob,
            "kernel_sizes": [3, 5],
            "sinc_prob": 0.1,
            "sinc_omega_range": [math.pi / 3, math.pi],
            "kernel_types": list(KERNEL_TYPES),
            "kernel_probs": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
            "sigma_x_range": [0.1, 0.5],
            "sigma_y_range": [0.1, 0.5],
            "rotation_range": [-math.pi, math.pi],
            # Shape beta: below or above 1 with equal odds (basicsr), within the range.
            "betag_range": [0.2, 1.0],
            "betap_range": list(betap_range),
            # Probabilities of (up, down, keep); up U(1, hi), down U(lo, 1) of resize_range.
            "resize_probs": list(resize_probs),
            "resize_range": [0.5, 1.2],
            # "current": scale this round's input; "original": output (original size x s).
            "resize_relative_to": resize_relative_to,
            "interpolations": list(INTERPOLATION_NAMES),
            "gaussian_noise_prob": 0.5,
            "noise_sigma_range": [1.0, 10.0],  # in 8-bit levels
            "poisson_scale_range": [0.05, 1.0],
            "gray_noise_prob": 0.4,
            "jpeg_prob": jpeg_prob,
            "jpeg_range": [10.0, 25.0],  # quality, drawn continuously
        }
    )


def default_degradation_config(preset: str = "realesrgan2") -> ml_collections.ConfigDict:
    """All degradation knobs with reference defaults; ``preset`` picks the chain."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown degradation preset {preset!r}; choose one of {PRESETS}")
    return ml_collections.ConfigDict(
        {
            "preset": preset,
            "downsample": {
                "scale_range": [0.25, 1.0],
                "down_interpolations": list(INTERPOLATION_NAMES),
                "up_interpolations": ["bilinear", "bicubic"],
            },
            "realesrgan2": {
                # "batch": the choices the reference makes once per GPU batch (each
                # stage's blur on/off, resize direction, scale and mode, noise kind; the
                # final order and resize mode; the gray Gaussian field) are shared by the
                # pairs of a training batch; "pair": each pair draws its own.
                "draw_per": "batch",
                "stage1": _stage_config(
                    blur_prob=1.0, betap_range=[0.5, 1.2], resize_probs=[0.2, 0.7, 0.1],
                    resize_relative_to="current", jpeg_prob=1.0,
                ),
                "stage2": _stage_config(
                    blur_prob=0.8, betap_range=[1.0, 1.2], resize_probs=[0.3, 0.4, 0.3],
                    resize_relative_to="original", jpeg_prob=0.0,
                ),
                "final": {
                    # Order: [resize back + sinc] then JPEG with this probability, else
                    # JPEG then [resize back + sinc].
                    "resize_first_prob": 0.5,
                    "interpolations": list(INTERPOLATION_NAMES),
                    "sinc_prob": 0.8,
                    "sinc_kernel_sizes": [3, 5],
                    "sinc_omega_range": [math.pi / 3, math.pi],
                    "jpeg_range": [10.0, 25.0],
                },
            },
        }
    )
