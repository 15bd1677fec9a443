"""anti_alias_downsample against an independent numpy/scipy rendering of the reference."""

import numpy as np
import pytest
import scipy.signal

from asrth_jax.models.antialias import anti_alias_downsample


def _reference_numpy(images: np.ndarray, scale: float) -> np.ndarray:
    # Written straight from the reference recipe with a full 2-D kernel (not separable)
    # and scipy's correlate, so a bug in our separable/strided path cannot hide.
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    ka = size // 2
    kb = ka - 1 if size % 2 == 0 else ka
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    mean = (size - 1) / 2
    kernel = np.exp(-((yy - mean) ** 2) / (2 * sigma**2)) * np.exp(
        -((xx - mean) ** 2) / (2 * sigma**2)
    )
    kernel /= kernel.sum()
    step = int(1 / scale)
    out = []
    for img in images:
        chans = []
        for c in range(img.shape[-1]):
            padded = np.pad(img[..., c], ((ka, kb), (ka, kb)))
            chans.append(scipy.signal.correlate2d(padded, kernel, mode="valid")[::step, ::step])
        out.append(np.stack(chans, -1))
    return np.stack(out)


@pytest.mark.parametrize(("scale", "size"), [(0.5, 16), (0.25, 20), (0.125, 32), (0.3, 18)])
def test_matches_numpy_reference(scale, size):
    rng = np.random.default_rng(0)
    images = rng.random((2, size, size + 3, 3), dtype=np.float32)
    got = np.asarray(anti_alias_downsample(images, scale))
    want = _reference_numpy(images, scale)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_known_kernel_sizes_and_shapes():
    # scale .25 -> sigma 1.5, kernel 13, pad 6/6; 64 px -> 16 px.
    x = np.zeros((1, 64, 64, 1), np.float32)
    assert anti_alias_downsample(x, 0.25).shape == (1, 16, 16, 1)
    # Odd sizes keep the reference's ceil behaviour of [::2].
    assert anti_alias_downsample(np.zeros((1, 7, 9, 2), np.float32), 0.5).shape == (1, 4, 5, 2)


def test_scale_one_is_identity_and_constant_interior_preserved():
    x = np.random.default_rng(1).random((1, 8, 8, 3), dtype=np.float32)
    assert anti_alias_downsample(x, 1.0) is x
    ones = np.ones((1, 64, 64, 1), np.float32)
    out = np.asarray(anti_alias_downsample(ones, 0.5))
    # Interior stays 1 (normalised kernel); the first row/col sees zero padding, < 1.
    np.testing.assert_allclose(out[0, 4:-4, 4:-4, 0], 1.0, atol=1e-6)
    assert out[0, 0, 0, 0] < 0.9


def test_rejects_bad_scale():
    with pytest.raises(ValueError):
        anti_alias_downsample(np.zeros((1, 4, 4, 1), np.float32), 2.0)
