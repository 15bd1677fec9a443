"""Coordinate grids and grid sampling with PyTorch's `grid_sample` semantics.

The released checkpoint was trained with `F.grid_sample(..., align_corners=False,
padding_mode='zeros')`, so parity depends on reproducing exactly that mapping from
normalised coordinates to pixel centres, and on out-of-range taps contributing zero.

Each sampler is written for ONE (image or volume, grid) pair; batching and the K+1
sparse motions are added with `jax.vmap` by the callers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def make_coordinate_grid_2d(height: int, width: int, dtype=jnp.float32) -> jax.Array:
    """(H, W, 2) grid of (x, y) spanning [-1, 1] inclusive, as the reference builds it."""
    x = 2.0 * (jnp.arange(width, dtype=dtype) / (width - 1)) - 1.0
    y = 2.0 * (jnp.arange(height, dtype=dtype) / (height - 1)) - 1.0
    xx = jnp.broadcast_to(x[None, :], (height, width))
    yy = jnp.broadcast_to(y[:, None], (height, width))
    return jnp.stack([xx, yy], axis=-1)


def make_coordinate_grid_3d(depth: int, height: int, width: int, dtype=jnp.float32) -> jax.Array:
    """(D, H, W, 3) grid of (x, y, z) spanning [-1, 1] inclusive."""
    x = 2.0 * (jnp.arange(width, dtype=dtype) / (width - 1)) - 1.0
    y = 2.0 * (jnp.arange(height, dtype=dtype) / (height - 1)) - 1.0
    z = 2.0 * (jnp.arange(depth, dtype=dtype) / (depth - 1)) - 1.0
    shape = (depth, height, width)
    xx = jnp.broadcast_to(x[None, None, :], shape)
    yy = jnp.broadcast_to(y[None, :, None], shape)
    zz = jnp.broadcast_to(z[:, None, None], shape)
    return jnp.stack([xx, yy, zz], axis=-1)


def _unnormalize(coord: jax.Array, size: int) -> jax.Array:
    # align_corners=False: -1 and 1 are the outer edges of the border pixels.
    return ((coord + 1.0) * size - 1.0) / 2.0


def _corner_weights(coord: jax.Array, size: int):
    """Lower/upper integer taps, their interpolation weights and in-range masks."""
    pos = _unnormalize(coord, size)
    low = jnp.floor(pos)
    frac = pos - low
    low = low.astype(jnp.int32)
    high = low + 1
    taps = []
    for index, weight in ((low, 1.0 - frac), (high, frac)):
        valid = (index >= 0) & (index <= size - 1)
        taps.append((jnp.clip(index, 0, size - 1), jnp.where(valid, weight, 0.0)))
    return taps


def grid_sample_2d(image: jax.Array, grid: jax.Array) -> jax.Array:
    """Bilinear sample of one image.

    Args:
      image: (H, W, C) input.
      grid: (H_out, W_out, 2) normalised (x, y) sampling positions.
    Returns:
      (H_out, W_out, C), zeros where the taps fall outside the image.
    """
    height, width, _ = image.shape
    x_taps = _corner_weights(grid[..., 0], width)
    y_taps = _corner_weights(grid[..., 1], height)
    out = 0.0
    for yi, wy in y_taps:
        for xi, wx in x_taps:
            out = out + image[yi, xi] * (wy * wx)[..., None].astype(image.dtype)
    return out


def grid_sample_3d(volume: jax.Array, grid: jax.Array) -> jax.Array:
    """Trilinear sample of one volume.

    Args:
      volume: (D, H, W, C) input.
      grid: (D_out, H_out, W_out, 3) normalised (x, y, z) sampling positions.
    Returns:
      (D_out, H_out, W_out, C), zeros where the taps fall outside the volume.
    """
    depth, height, width, _ = volume.shape
    x_taps = _corner_weights(grid[..., 0], width)
    y_taps = _corner_weights(grid[..., 1], height)
    z_taps = _corner_weights(grid[..., 2], depth)
    out = 0.0
    for zi, wz in z_taps:
        for yi, wy in y_taps:
            for xi, wx in x_taps:
                weight = (wz * wy * wx)[..., None].astype(volume.dtype)
                out = out + volume[zi, yi, xi] * weight
    return out


# Batched forms: vmap over a leading batch axis of both arguments.
batched_grid_sample_2d = jax.vmap(grid_sample_2d)
batched_grid_sample_3d = jax.vmap(grid_sample_3d)
