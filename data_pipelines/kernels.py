"""Blur kernels of the Real-ESRGAN degradation model, in numpy.

Real-ESRGAN draws one of six Gaussian-family kernels (isotropic / anisotropic,
plain / generalized / plateau) or, with a small probability, a 2D sinc
(circular low-pass) kernel that imitates ringing and overshoot artefacts. The
formulas follow the paper (arXiv 2107.10833, Sec. 3.1); all randomness comes from
the caller's ``np.random.Generator`` so a record's degradation is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import special

KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)


def _grid(kernel_size: int) -> np.ndarray:
    """Pixel offsets (k, k, 2) centred on the kernel's middle tap."""
    ax = np.arange(kernel_size, dtype=np.float64) - (kernel_size - 1) / 2.0
    xx, yy = np.meshgrid(ax, ax)
    return np.stack([xx, yy], axis=-1)


def _inverse_covariance(sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    """Inverse of the covariance R diag(sx^2, sy^2) R^T of a rotated 2D Gaussian."""
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sig_x**2, sig_y**2]) @ rot.T
    return np.linalg.inv(cov)


def _mahalanobis_sq(kernel_size: int, sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    grid = _grid(kernel_size)
    inv = _inverse_covariance(sig_x, sig_y, theta)
    return np.einsum("...i,ij,...j->...", grid, inv, grid)


def gaussian_family_kernel(
    kind: str, kernel_size: int, sig_x: float, sig_y: float, theta: float, beta: float
) -> np.ndarray:
    """One normalised kernel of type ``kind`` (see KERNEL_TYPES).

    generalized: exp(-0.5 d^beta) gives heavier/lighter tails than a Gaussian;
    plateau: 1 / (1 + d^beta) has a flat top, both as in Real-ESRGAN.
    """
    d2 = _mahalanobis_sq(kernel_size, sig_x, sig_y, theta)
    if kind.startswith("generalized"):
        k = np.exp(-0.5 * np.power(d2, beta))
    elif kind.startswith("plateau"):
        k = 1.0 / (1.0 + np.power(d2, beta))
    else:
        k = np.exp(-0.5 * d2)
    return (k / k.sum()).astype(np.float32)


def sinc_kernel(cutoff: float, kernel_size: int) -> np.ndarray:
    """2D circular low-pass (jinc) kernel with cut-off frequency ``cutoff`` (rad/px)."""
    grid = _grid(kernel_size)
    r = np.sqrt((grid**2).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    centre = (kernel_size - 1) // 2
    k[centre, centre] = cutoff**2 / (4 * np.pi)
    return (k / k.sum()).astype(np.float32)


def random_sinc_kernel(rng: np.random.Generator, kernel_sizes: Sequence[int]) -> np.ndarray:
    """Sinc kernel with Real-ESRGAN's cut-off range (wider for small kernels)."""
    size = int(rng.choice(kernel_sizes))
    lo = np.pi / 3 if size < 13 else np.pi / 5
    return sinc_kernel(float(rng.uniform(lo, np.pi)), size)


def random_blur_kernel(
    rng: np.random.Generator,
    *,
    kernel_sizes: Sequence[int],
    kernel_types: Sequence[str],
    kernel_probs: Sequence[float],
    sigma_x_range: Sequence[float],
    sigma_y_range: Sequence[float],
    rotation_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
    sinc_prob: float,
) -> np.ndarray:
    """Draw one first/second-stage blur kernel the way Real-ESRGAN does."""
    size = int(rng.choice(kernel_sizes))
    if rng.uniform() < sinc_prob:
        lo = np.pi / 3 if size < 13 else np.pi / 5
        return sinc_kernel(float(rng.uniform(lo, np.pi)), size)
    probs = np.asarray(kernel_probs, dtype=np.float64)
    kind = str(kernel_types[rng.choice(len(kernel_types), p=probs / probs.sum())])
    sig_x = float(rng.uniform(*sigma_x_range))
    if kind.endswith("iso") and not kind.endswith("aniso"):
        sig_y, theta = sig_x, 0.0
    else:
        sig_y = float(rng.uniform(*sigma_y_range))
        theta = float(rng.uniform(*rotation_range))
    if kind.startswith("generalized"):
        # Real-ESRGAN draws beta below 1 half of the time (heavier tails).
        lo, hi = betag_range
        beta = float(rng.uniform(lo, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, hi))
    elif kind.startswith("plateau"):
        lo, hi = betap_range
        beta = float(rng.uniform(lo, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, hi))
    else:
        beta = 1.0
    return gaussian_family_kernel(kind, size, sig_x, sig_y, theta, beta)
