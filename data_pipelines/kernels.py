"""Blur kernels of AdaSR's degradation (basicsr's mixed Gaussian family and sinc), in numpy.

Sampling returns a `KernelSpec` (the drawn numbers only) and `kernel_array` builds the
taps, so the sampled-parameter statistics can be checked without building images.
The draws follow basicsr's `random_mixed_kernels` / `circular_lowpass_kernel` as the
AdaSR dataset calls them: size from {3, 5}, a sinc kernel with probability
`sinc_prob`, else one of six Gaussian-family types; generalized/plateau shape beta
is drawn below 1 or above 1 with equal odds (basicsr's rule), so a range ending at 1
puts half the draws exactly at 1.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """One drawn kernel: ``kind`` is a KERNEL_TYPES entry or ``"sinc"``."""

    kind: str
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    theta: float = 0.0
    beta: float = 1.0
    omega_c: float = 0.0


def _grid(kernel_size: int) -> np.ndarray:
    """Pixel offsets (k, k, 2) = (x, y) centred on the kernel's middle tap."""
    ax = np.arange(kernel_size, dtype=np.float64) - (kernel_size - 1) / 2.0
    xx, yy = np.meshgrid(ax, ax)
    return np.stack([xx, yy], axis=-1)


def _mahalanobis_sq(kernel_size: int, sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    """d^2 = g^T C^-1 g with C = R diag(sx^2, sy^2) R^T, R a rotation by theta."""
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(rot @ np.diag([sig_x**2, sig_y**2]) @ rot.T)
    grid = _grid(kernel_size)
    return np.einsum("...i,ij,...j->...", grid, inv, grid)


def gaussian_family_kernel(
    kind: str, kernel_size: int, sig_x: float, sig_y: float, theta: float, beta: float
) -> np.ndarray:
    """One normalised kernel of type ``kind`` (see KERNEL_TYPES).

    generalized: exp(-0.5 d^(2 beta)) (heavier tails for beta < 1); plateau:
    1 / (1 + d^(2 beta)) (flat top); plain: exp(-0.5 d^2).
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


def kernel_array(spec: KernelSpec) -> np.ndarray:
    """The (size, size) float32 taps of a drawn kernel, summing to 1."""
    if spec.kind == "sinc":
        return sinc_kernel(spec.omega_c, spec.size)
    return gaussian_family_kernel(spec.kind, spec.size, spec.sigma_x, spec.sigma_y,
                                  spec.theta, spec.beta)


def weighted_index(rng: np.random.Generator, weights: Sequence[float]) -> int:
    """Index i with probability weights[i] / sum(weights) (one uniform; no array work)."""
    u = float(rng.uniform()) * float(sum(weights))
    acc = 0.0
    last = 0
    for i, w in enumerate(weights):
        if w > 0:
            acc += float(w)
            last = i
            if u < acc:
                return i
    return last


def _beta(rng: np.random.Generator, beta_range: Sequence[float]) -> float:
    # basicsr: below or above 1 with equal odds, whatever the range's ends.
    lo, hi = beta_range
    return float(rng.uniform(lo, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, hi))


def sample_sinc_kernel(
    rng: np.random.Generator, kernel_sizes: Sequence[int], omega_range: Sequence[float]
) -> KernelSpec:
    """A sinc kernel of a size from ``kernel_sizes`` and cut-off U(omega_range)."""
    size = int(kernel_sizes[rng.integers(len(kernel_sizes))])
    return KernelSpec("sinc", size, omega_c=float(rng.uniform(*omega_range)))


def sample_blur_kernel(
    rng: np.random.Generator,
    *,
    kernel_sizes: Sequence[int],
    sinc_prob: float,
    sinc_omega_range: Sequence[float],
    kernel_types: Sequence[str],
    kernel_probs: Sequence[float],
    sigma_x_range: Sequence[float],
    sigma_y_range: Sequence[float],
    rotation_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
) -> KernelSpec:
    """Draw one stage-1/stage-2 blur kernel the way AdaSR's dataset does."""
    size = int(kernel_sizes[rng.integers(len(kernel_sizes))])
    if rng.uniform() < sinc_prob:
        return KernelSpec("sinc", size, omega_c=float(rng.uniform(*sinc_omega_range)))
    kind = str(kernel_types[weighted_index(rng, kernel_probs)])
    if kind not in KERNEL_TYPES:
        raise ValueError(f"unknown blur kernel type {kind!r}; choose from {KERNEL_TYPES}")
    sig_x = float(rng.uniform(*sigma_x_range))
    if kind.endswith("aniso"):
        sig_y = float(rng.uniform(*sigma_y_range))
        theta = float(rng.uniform(*rotation_range))
    else:
        sig_y, theta = sig_x, 0.0
    if kind.startswith("generalized"):
        beta = _beta(rng, betag_range)
    elif kind.startswith("plateau"):
        beta = _beta(rng, betap_range)
    else:
        beta = 1.0
    return KernelSpec(kind, size, sig_x, sig_y, theta, beta)
