"""The chain's JPEG is basicsr's DiffJPEG: checked against hand-computed 8x8 blocks."""

import itertools

import numpy as np
import pytest

from data_pipelines import jpeg


def _basis(u: int, v: int) -> np.ndarray:
    """Orthonormal 8x8 DCT basis image for (vertical u, horizontal v) frequency."""
    c = [np.sqrt(1 / 8)] + [0.5] * 7
    x = np.arange(8)
    return (c[u] * np.cos((2 * x + 1) * u * np.pi / 16))[:, None] * \
        (c[v] * np.cos((2 * x + 1) * v * np.pi / 16))[None, :]


def _gray(levels: np.ndarray) -> np.ndarray:
    """A gray RGB image in [0, 1] from 8-bit levels (Y = level, Cb = Cr = 0)."""
    return np.repeat((levels / 255.0)[..., None], 3, axis=-1).astype(np.float32)


def test_quality_factor_is_continuous_and_uncapped():
    assert jpeg.quality_to_factor(10) == pytest.approx(5.0)
    assert jpeg.quality_to_factor(25) == pytest.approx(2.0)
    assert jpeg.quality_to_factor(12.5) == pytest.approx(4.0)
    assert jpeg.quality_to_factor(75) == pytest.approx(0.5)
    # At q 10 the luma step at the highest frequency is 99 * 5 = 495 (libjpeg caps at 255).
    assert (jpeg.LUMA_TABLE * jpeg.quality_to_factor(10)).max() == pytest.approx(121 * 5)


@pytest.mark.parametrize(("level", "quality", "expected"), [
    # DC of a flat block = 8 (L - 128); luma DC step = 16 f; f(10) = 5, f(25) = 2.
    (131, 10, 128),  # 24 / 80 = 0.3 -> 0
    (131, 25, 132),  # 24 / 32 = 0.75 -> 1 -> 32 / 8 = 4
    (200, 10, 198),  # 576 / 80 = 7.2 -> 7 -> 560 / 8 = 70
    (200, 25, 200),  # 576 / 32 = 18 exactly
    (60, 10, 58),    # -544 / 80 = -6.8 -> -7 -> -70
    (60, 25, 60),    # -544 / 32 = -17 exactly
])
def test_flat_block_dc_quantisation_by_hand(level, quality, expected):
    out = jpeg.diff_jpeg(_gray(np.full((8, 8), float(level))), quality)
    np.testing.assert_allclose(out * 255.0, expected, atol=1e-3)


def test_high_frequency_step_is_not_capped_at_255():
    # One coefficient of 240 at (7, 7): its step is 99 f. Uncapped at q 10 the step is
    # 495 and the block goes flat; libjpeg's capped step 255 would keep it (240/255 -> 1).
    levels = np.full((16, 16), 128.0)
    levels[:8, :8] += 240 * _basis(7, 7)
    np.testing.assert_allclose(jpeg.diff_jpeg(_gray(levels), 10) * 255, 128, atol=1e-3)
    # At q 25 the step is 198: round(240 / 198) = 1, so the block keeps 198 x basis.
    want = np.full((16, 16), 128.0)
    want[:8, :8] += 198 * _basis(7, 7)
    out = jpeg.diff_jpeg(_gray(levels), 25)
    np.testing.assert_allclose(out[..., 0] * 255, want, atol=1e-3)


def test_tables_are_applied_transposed_like_diffjpeg():
    # DiffJPEG's luma table is the printed one transposed: step 12 f at (vertical 0,
    # horizontal 1) and 11 f at (1, 0). At q 25 a coefficient of 11.5 rounds to 0 against
    # 24 but to 1 against 22.
    horizontal = np.full((8, 8), 128.0) + 11.5 * _basis(0, 1)
    vertical = np.full((8, 8), 128.0) + 11.5 * _basis(1, 0)
    np.testing.assert_allclose(jpeg.diff_jpeg(_gray(horizontal), 25) * 255, 128, atol=1e-3)
    np.testing.assert_allclose(jpeg.diff_jpeg(_gray(vertical), 25)[..., 0] * 255,
                               128 + 22 * _basis(1, 0), atol=1e-3)


def _direct_diffjpeg(img: np.ndarray, quality: float) -> np.ndarray:
    """DiffJPEG step by step: per-block 4D cosine tensor, explicit 2x2 means, repeats."""
    f = jpeg.quality_to_factor(quality)
    h, w = img.shape[:2]
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    x = np.zeros((hp, wp, 3))
    x[:h, :w] = img
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                  [0.5, -0.418688, -0.081312]])
    ycc = x * 255 @ m.T + [0, 128, 128]
    planes = [ycc[..., 0]] + [ycc[..., c].reshape(hp // 2, 2, wp // 2, 2).mean((1, 3))
                              for c in (1, 2)]
    cos = np.zeros((8, 8, 8, 8))
    for a, b, u, v in itertools.product(range(8), repeat=4):
        cos[a, b, u, v] = (np.cos((2 * a + 1) * u * np.pi / 16)
                           * np.cos((2 * b + 1) * v * np.pi / 16))
    alpha = np.outer(*[[1 / np.sqrt(2)] + [1] * 7] * 2)
    out = []
    tables = [jpeg.STANDARD_LUMA_TABLE.T] + [jpeg.STANDARD_CHROMA_TABLE.T] * 2
    for plane, table in zip(planes, tables, strict=True):
        rec = np.zeros_like(plane)
        for i in range(0, plane.shape[0], 8):
            for j in range(0, plane.shape[1], 8):
                coef = 0.25 * alpha * np.tensordot(plane[i:i + 8, j:j + 8] - 128, cos, 2)
                coef = np.round(coef / (table * f)) * (table * f)
                rec[i:i + 8, j:j + 8] = 0.25 * np.einsum("uv,abuv->ab", coef * alpha, cos) + 128
        out.append(rec)
    out[1:] = [p.repeat(2, 0).repeat(2, 1) for p in out[1:]]
    inv = np.array([[1, 0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]])
    rgb = (np.stack(out, -1) - [0, 128, 128]) @ inv.T
    return np.clip(rgb, 0, 255)[:h, :w] / 255


@pytest.mark.parametrize("quality", [10, 17.3, 25])
def test_colour_image_matches_step_by_step_diffjpeg(quality):
    rng = np.random.default_rng(0)
    # 24 x 40: padded to 32 x 48, so padding, 4:2:0 and chroma blocks all take part.
    img = (0.3 * rng.random((24, 40, 3)) + np.linspace(0, 0.7, 40)[None, :, None])
    out = jpeg.diff_jpeg(img.astype(np.float32), quality)
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, _direct_diffjpeg(img.astype(np.float32), quality),
                               atol=1e-5)


def test_output_is_float_not_rounded_to_8_bits():
    rng = np.random.default_rng(1)
    out = jpeg.diff_jpeg(rng.random((21, 37, 3)).astype(np.float32), 20)
    assert out.shape == (21, 37, 3)
    assert not np.allclose(out * 255, np.round(out * 255), atol=1e-3)


def test_bad_input_is_clear():
    with pytest.raises(ValueError, match="HxWx3"):
        jpeg.diff_jpeg(np.zeros((8, 8), np.float32), 20)
    with pytest.raises(ValueError, match="quality"):
        jpeg.quality_to_factor(0)
