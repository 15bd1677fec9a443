"""Equivariance transform: parity with the reference formulas (torch) and finite grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asrth_jax.transforms import (
    TransformParams,
    sample_transform_params,
    transform_frame,
    warp_coordinates,
)


def _numpy_warp(theta, cp, cparams, coords):
    # Independent numpy transcription of the reference warp_coordinates.
    out = np.einsum("bij,bnj->bni", theta[:, :, :2], coords) + theta[:, None, :, 2]
    dist = np.abs(coords[:, :, None, :] - cp[None, None]).sum(-1)
    res = (dist**2 * np.log(dist + 1e-6) * cparams).sum(-1, keepdims=True)
    return out + res


def test_sample_shapes_and_identity_mean():
    params = sample_transform_params(jax.random.key(0), 3, 0.05, 0.005, 5)
    assert params.theta.shape == (3, 2, 3)
    assert params.control_points.shape == (25, 2)
    assert params.control_params.shape == (3, 1, 25)
    np.testing.assert_allclose(params.control_points[0], [-1, -1])
    np.testing.assert_allclose(params.control_points[1], [-0.5, -1])
    # Large-sample statistics match the requested sigmas around the identity.
    big = sample_transform_params(jax.random.key(1), 4000, 0.05, 0.005, 5)
    np.testing.assert_allclose(big.theta.mean(0), np.eye(2, 3), atol=5e-3)
    np.testing.assert_allclose(big.theta.std(0), 0.05, rtol=0.05)
    np.testing.assert_allclose(big.control_params.std(), 0.005, rtol=0.05)
    affine_only = sample_transform_params(jax.random.key(0), 2, 0.05, None, None)
    assert affine_only.control_points.shape == (0, 2)


def test_warp_matches_numpy_reference():
    params = sample_transform_params(jax.random.key(2), 2, 0.1, 0.05, 5)
    coords = np.random.default_rng(0).uniform(-1, 1, (2, 7, 2)).astype(np.float32)
    got = np.asarray(warp_coordinates(params, jnp.asarray(coords)))
    want = _numpy_warp(
        np.asarray(params.theta),
        np.asarray(params.control_points),
        np.asarray(params.control_params),
        coords,
    )
    np.testing.assert_allclose(got, want, atol=1e-6)
    # A (1, N, 2) grid broadcasts over the batch of transforms.
    got_b = warp_coordinates(params, jnp.asarray(coords[:1]))
    np.testing.assert_allclose(got_b[0], got[0], atol=1e-6)


def test_reflection_never_reads_zeros():
    # A constant frame stays constant under any warp with reflection padding; zeros
    # padding would darken the borders that map outside [-1, 1].
    image = jnp.full((1, 8, 10, 3), 0.7, jnp.float32)
    params = TransformParams(
        jnp.array([[[1.5, 0.2, 0.4], [-0.1, 1.3, -0.3]]]), jnp.zeros((0, 2)), jnp.zeros((1, 1, 0))
    )
    np.testing.assert_allclose(transform_frame(params, image), 0.7, atol=1e-5)


def test_gradients_finite_on_control_point():
    params = sample_transform_params(jax.random.key(3), 1, 0.05, 0.005, 5)
    # (0, 0), (-1, -1) and (0.5, 0.5) are exactly control points of the 5x5 grid.
    coords = jnp.array([[[0.0, 0.0], [-1.0, -1.0], [0.5, 0.5], [0.2, -0.3]]])

    def f(c, p):
        return warp_coordinates(p, c).sum()

    g_coords, g_params = jax.grad(f, argnums=(0, 1))(coords, params)
    assert np.all(np.isfinite(g_coords))
    for leaf in jax.tree.leaves(g_params):
        assert np.all(np.isfinite(leaf))


def test_transform_frame_matches_torch_reflection():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    image = rng.random((2, 12, 16, 3), dtype=np.float32)
    # Large sigmas push samples outside [-1, 1] so reflection actually matters.
    params = sample_transform_params(jax.random.key(5), 2, 0.3, 0.05, 5)
    got = np.asarray(transform_frame(params, jnp.asarray(image)))

    h, w = 12, 16
    xs = 2 * np.arange(w) / (w - 1) - 1
    ys = 2 * np.arange(h) / (h - 1) - 1
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(1, -1, 2).astype(np.float32)
    warped = _numpy_warp(
        np.asarray(params.theta),
        np.asarray(params.control_points),
        np.asarray(params.control_params),
        np.repeat(grid, 2, 0),
    ).reshape(2, h, w, 2)
    assert np.abs(warped).max() > 1.1
    want = F.grid_sample(
        torch.from_numpy(image).permute(0, 3, 1, 2),
        torch.from_numpy(warped.astype(np.float32)),
        mode="bilinear",
        padding_mode="reflection",
        align_corners=False,
    )
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=2e-5)
