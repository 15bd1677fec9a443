"""Random affine + thin-plate-spline warps for the equivariance loss.

Follows the reference `Transform` (face-vid2vid reimplementation, modules/model.py):

* affine: theta = I(2x3) + N(0, sigma_affine) per sample, applied as
  theta[:, :2] @ xy + theta[:, 2];
* TPS: a points_tps x points_tps control grid spanning [-1, 1]; one scalar weight per
  control point per sample, N(0, sigma_tps). The displacement
  sum_p w_p * d_p^2 * log(d_p + 1e-6), with d_p the *L1* distance |dx| + |dy| to
  control point p, is added to BOTH x and y (the reference broadcasts one scalar
  field over the two coordinates; we keep that, it is what the checkpoint saw);
* frames are resampled bilinearly with `padding_mode='reflection'`,
  align_corners=False.

Gradient safety: the reference kernel uses the L1 distance and log(d + 1e-6), so there
is no sqrt at zero. d/dd [d^2 log(d + 1e-6)] = 2 d log(d + 1e-6) + d^2 / (d + 1e-6) is 0
at d = 0 and jnp.abs has a zero (not NaN) derivative at 0, so gradients stay finite
when a point lies exactly on a control point (pinned by a test).

Everything is a pure function of an explicit `TransformParams` pytree so it can be
sampled inside a jitted train step from a PRNG key.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from asrth_jax.models.warp import batched_grid_sample_2d, make_coordinate_grid_2d

TPS_LOG_EPS = 1e-6


class TransformParams(NamedTuple):
    """One random warp per batch element.

    theta: (B, 2, 3) affine matrices.
    control_points: (P, 2) TPS control points (x, y); P = 0 disables TPS.
    control_params: (B, 1, P) TPS weights.
    """

    theta: jax.Array
    control_points: jax.Array
    control_params: jax.Array


def sample_transform_params(
    key: jax.Array,
    batch: int,
    sigma_affine: float = 0.05,
    sigma_tps: float | None = 0.005,
    points_tps: int | None = 5,
) -> TransformParams:
    """Draw the reference's random affine + TPS parameters.

    Passing `sigma_tps=None` or `points_tps=None` gives an affine-only transform
    (the reference's `tps = False` branch) via zero control points.
    """
    key_affine, key_tps = jax.random.split(key)
    noise = sigma_affine * jax.random.normal(key_affine, (batch, 2, 3), jnp.float32)
    theta = noise + jnp.eye(2, 3, dtype=jnp.float32)[None]
    if sigma_tps is None or points_tps is None:
        control_points = jnp.zeros((0, 2), jnp.float32)
        control_params = jnp.zeros((batch, 1, 0), jnp.float32)
    else:
        control_points = make_coordinate_grid_2d(points_tps, points_tps).reshape(-1, 2)
        control_params = sigma_tps * jax.random.normal(
            key_tps, (batch, 1, points_tps**2), jnp.float32
        )
    return TransformParams(theta, control_points, control_params)


def warp_coordinates(params: TransformParams, coords: jax.Array) -> jax.Array:
    """Apply the per-sample warp to (B, N, 2) (or broadcastable (1, N, 2)) xy points.

    Returns (B, N, 2).
    """
    theta = params.theta.astype(coords.dtype)
    linear = theta[:, None, :, :2]  # (B, 1, 2, 2)
    offset = theta[:, None, :, 2]  # (B, 1, 2)
    # matmul (not einsum) so a (1, N, 2) grid broadcasts against B transforms.
    transformed = jnp.matmul(linear, coords[..., None])[..., 0] + offset
    if params.control_points.shape[0] == 0:
        return transformed
    cp = params.control_points.astype(coords.dtype)
    # L1 distance to every control point, exactly as the reference (not Euclidean).
    dist = jnp.abs(coords[:, :, None, :] - cp[None, None, :, :]).sum(-1)  # (B?, N, P)
    kernel = dist**2 * jnp.log(dist + TPS_LOG_EPS)
    displacement = (kernel * params.control_params.astype(coords.dtype)).sum(-1)
    # Same scalar displacement on x and y (reference broadcast of a (B, N, 1) field).
    return transformed + displacement[..., None]


def reflect_coordinates(coords: jax.Array, size: int) -> jax.Array:
    """PyTorch `padding_mode='reflection'` (align_corners=False) on normalised coords.

    The shared sampler only knows zeros padding, so we fold out-of-range positions
    back inside first: in pixel units the reflection axes are -0.5 and size - 0.5
    (the outer pixel edges), then PyTorch clips to [0, size - 1]. Inside that range a
    zeros-padding bilinear sample never reads outside the image, so the result equals
    PyTorch's reflection sampling.
    """
    pixel = ((coords + 1.0) * size - 1.0) / 2.0
    low, span = -0.5, float(size)
    shifted = jnp.abs(pixel - low)
    extra = jnp.mod(shifted, span)
    flips = jnp.floor(shifted / span)
    reflected = jnp.where(jnp.mod(flips, 2.0) == 0.0, extra + low, span - extra + low)
    reflected = jnp.clip(reflected, 0.0, size - 1.0)
    return (2.0 * reflected + 1.0) / size - 1.0


def transform_frame(params: TransformParams, image: jax.Array) -> jax.Array:
    """Warp a batch of NHWC frames: output(p) = image(warp(p)), reflection padding."""
    batch, height, width, _ = image.shape
    grid = make_coordinate_grid_2d(height, width, dtype=image.dtype).reshape(1, -1, 2)
    grid = warp_coordinates(params, grid).reshape(batch, height, width, 2)
    grid = jnp.stack(
        [reflect_coordinates(grid[..., 0], width), reflect_coordinates(grid[..., 1], height)],
        axis=-1,
    )
    return batched_grid_sample_2d(image, grid)
