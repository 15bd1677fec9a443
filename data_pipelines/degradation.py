"""AdaSR source-frame degradations as Grain random transforms (numpy + OpenCV).

Only the source frame is degraded; the driving frame (the training target) stays
clean, which is what teaches the generator to restore detail from a low-quality
source (AdaSR). Three presets share one ConfigDict layout so a locked config can
switch presets by overriding a single string:

* ``none``        -- identity (source_lq is a copy of source).
* ``downsample``  -- the paper's "random downsampling": shrink by a random scale
                     with a random area/bilinear/bicubic filter, then resize back.
* ``realesrgan2`` -- Real-ESRGAN's second-order model (blur -> resize -> noise ->
                     JPEG, twice, then resize back + sinc in random order with the
                     last JPEG), with the numbers given in DESIGN.md.

All randomness comes from the per-record ``np.random.Generator`` that Grain hands
to ``random_map`` so a record always gets the same degradation for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import grain
import ml_collections
import numpy as np

from data_pipelines import kernels
from data_pipelines.degradation_config import PRESETS, default_degradation_config

__all__ = ["PRESETS", "DegradeSource", "default_degradation_config", "degrade"]


INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
}


def _to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) * (1.0 / 255.0)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _pick(rng: np.random.Generator, names: Sequence[str]) -> int:
    return INTERPOLATIONS[str(names[rng.integers(len(names))])]


def resize(image: np.ndarray, hw: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resize to (h, w); bicubic may overshoot so results are clipped to [0, 1]."""
    h, w = hw
    if image.shape[:2] == (h, w):
        return image
    out = cv2.resize(image, (w, h), interpolation=interpolation)
    return np.clip(out, 0.0, 1.0) if interpolation == cv2.INTER_CUBIC else out


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve with reflect padding (what Real-ESRGAN's filter2D does)."""
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def add_gaussian_noise(
    image: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool
) -> np.ndarray:
    """Additive white noise; ``gray`` shares one noise field across channels."""
    h, w, c = image.shape
    shape = (h, w, 1) if gray else (h, w, c)
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return np.clip(image + noise, 0.0, 1.0)


def add_poisson_noise(
    image: np.ndarray, rng: np.random.Generator, scale: float, gray: bool
) -> np.ndarray:
    """Shot noise as in Real-ESRGAN: Poisson counts at the image's own number of levels."""
    base = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None] if gray else image
    q = _to_uint8(base)
    levels = max(int(np.count_nonzero(np.bincount(q.ravel(), minlength=256))), 2)
    vals = float(2 ** math.ceil(math.log2(levels)))
    qf = q.astype(np.float32) * (1.0 / 255.0)
    noisy = rng.poisson(qf * vals).astype(np.float32) / vals
    return np.clip(image + (noisy - qf) * np.float32(scale), 0.0, 1.0)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Real JPEG round trip (OpenCV expects BGR, so flip channels around it)."""
    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(_to_uint8(image)[..., ::-1]),
        [cv2.IMWRITE_JPEG_QUALITY, int(quality)],
    )
    if not ok:
        raise ValueError("cv2.imencode failed to JPEG-encode a degraded frame")
    return _to_float(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


# --------------------------------------------------------------------- presets


def _noise(image: np.ndarray, rng: np.random.Generator, st: Any) -> np.ndarray:
    gray = bool(rng.uniform() < st.gray_noise_prob)
    if rng.uniform() < st.gaussian_noise_prob:
        return add_gaussian_noise(image, rng, float(rng.uniform(*st.noise_sigma_range)), gray)
    return add_poisson_noise(image, rng, float(rng.uniform(*st.poisson_scale_range)), gray)


def _stage(
    image: np.ndarray,
    rng: np.random.Generator,
    st: Any,
    orig_hw: tuple[int, int],
    scale: float,
    clip: Sequence[float],
) -> tuple[np.ndarray, float]:
    """One Real-ESRGAN round: blur -> resize -> noise -> JPEG. Returns the new scale."""
    if rng.uniform() < st.blur_prob:
        k = kernels.random_blur_kernel(
            rng,
            kernel_sizes=st.kernel_sizes,
            kernel_types=st.kernel_types,
            kernel_probs=st.kernel_probs,
            sigma_x_range=st.sigma_x_range,
            sigma_y_range=st.sigma_y_range,
            rotation_range=st.rotation_range,
            betag_range=st.betag_range,
            betap_range=st.betap_range,
            sinc_prob=st.sinc_prob,
        )
        image = blur(image, k)
    mode = rng.choice(3, p=np.asarray(st.resize_probs) / np.sum(st.resize_probs))
    lo, hi = st.resize_range
    factor = float(rng.uniform(1.0, hi)) if mode == 0 else (
        float(rng.uniform(lo, 1.0)) if mode == 1 else 1.0
    )
    scale = float(np.clip(scale * factor, *clip))
    hw = (max(1, round(orig_hw[0] * scale)), max(1, round(orig_hw[1] * scale)))
    image = resize(image, hw, _pick(rng, st.interpolations))
    image = _noise(image, rng, st)
    image = jpeg(image, int(rng.integers(st.jpeg_range[0], st.jpeg_range[1] + 1)))
    return image, scale


def degrade_realesrgan2(image: np.ndarray, rng: np.random.Generator, cfg: Any) -> np.ndarray:
    """Real-ESRGAN second-order degradation of a uint8 HxWx3 image (same shape out)."""
    orig_hw = image.shape[:2]
    x = _to_float(image)
    x, scale = _stage(x, rng, cfg.stage1, orig_hw, 1.0, cfg.scale_clip_range)
    x, scale = _stage(x, rng, cfg.stage2, orig_hw, scale, cfg.scale_clip_range)

    def back_and_sinc(y: np.ndarray) -> np.ndarray:
        y = resize(y, orig_hw, _pick(rng, cfg.final_interpolations))
        if rng.uniform() < cfg.final_sinc_prob:
            y = blur(y, kernels.random_sinc_kernel(rng, cfg.final_sinc_kernel_sizes))
        return y

    st = cfg.stage2
    quality = int(rng.integers(st.jpeg_range[0], st.jpeg_range[1] + 1))
    # Real-ESRGAN applies the final JPEG before or after the resize+sinc, 50/50.
    if rng.uniform() < 0.5:
        x = jpeg(back_and_sinc(x), quality)
    else:
        x = back_and_sinc(jpeg(x, quality))
    return _to_uint8(x)


def degrade_downsample(image: np.ndarray, rng: np.random.Generator, cfg: Any) -> np.ndarray:
    """Shrink by a random scale with a random filter, then resize back up."""
    h, w = image.shape[:2]
    s = float(rng.uniform(*cfg.scale_range))
    small = (max(1, round(h * s)), max(1, round(w * s)))
    x = resize(_to_float(image), small, _pick(rng, cfg.down_interpolations))
    x = resize(x, (h, w), _pick(rng, cfg.up_interpolations))
    return _to_uint8(x)


def degrade_none(image: np.ndarray, rng: np.random.Generator, cfg: Any) -> np.ndarray:
    del rng, cfg
    return image.copy()


_DEGRADERS: dict[str, Callable[[np.ndarray, np.random.Generator, Any], np.ndarray]] = {
    "none": degrade_none,
    "downsample": degrade_downsample,
    "realesrgan2": degrade_realesrgan2,
}


def degrade(
    image: np.ndarray, rng: np.random.Generator, config: ml_collections.ConfigDict
) -> np.ndarray:
    """Degrade one uint8 HxWx3 image with ``config.preset``; output has the same shape."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"degrade expects a uint8 HxWxC image, got {image.dtype} {image.shape}")
    preset = config.preset
    if preset not in _DEGRADERS:
        raise ValueError(f"unknown degradation preset {preset!r}; choose one of {PRESETS}")
    sub = config.get(preset, None)
    return _DEGRADERS[preset](image, rng, sub)


# ------------------------------------------------------------------ transforms


class DegradeSource(grain.transforms.RandomMap):
    """Adds ``source_lq`` = degrade(``source``) to a pair record; driving is untouched."""

    def __init__(self, config: ml_collections.ConfigDict, key: str = "source",
                 out_key: str = "source_lq"):
        self.config = config
        self.key = key
        self.out_key = out_key

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        out = dict(element)
        out[self.out_key] = degrade(element[self.key], rng, self.config)
        return out
