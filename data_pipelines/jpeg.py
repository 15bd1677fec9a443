"""The JPEG of AdaSR's degradation chain: basicsr's DiffJPEG (non-differentiable), in numpy.

AdaSR compresses the degraded source with basicsr's `DiffJPEG(differentiable=False)`,
not with libjpeg. The two differ where it matters for training: DiffJPEG scales the
standard tables by f = 5000/q/100 (q < 50) without libjpeg's clamp of each entry to
[1, 255] and without rounding the scaled table, takes a continuous quality, and never
rounds pixels (only the quantised DCT coefficients). At q 10-25 its high-frequency
steps reach 600 and more, so it removes more detail than `cv2.imencode` does.

Steps, as in DiffJPEG: RGB*255 -> YCbCr (JPEG/JFIF matrix, chroma +128) with the image
zero-padded (black) at the bottom/right to a multiple of 16; Cb/Cr averaged over 2x2
(4:2:0); orthonormal 8x8 DCT of (value - 128); divide by table*f, round, multiply
back; inverse DCT; chroma repeated 2x2; back to RGB; clip to [0, 255]; /255; crop.
DiffJPEG stores the tables transposed relative to the usual row = vertical frequency
listing, so its luma step at (vertical 0, horizontal 1) is 12, not 11; we keep that.
"""

from __future__ import annotations

import numpy as np

# The standard tables (ITU T.81 Annex K), rows = vertical frequency as usually printed.
STANDARD_LUMA_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float32,
)
STANDARD_CHROMA_TABLE = np.full((8, 8), 99.0, dtype=np.float32)
STANDARD_CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99],
                                 [47, 66, 99, 99]]

# As DiffJPEG applies them: index [vertical frequency, horizontal frequency].
LUMA_TABLE = np.ascontiguousarray(STANDARD_LUMA_TABLE.T)
CHROMA_TABLE = np.ascontiguousarray(STANDARD_CHROMA_TABLE.T)

_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=np.float32,
)
_YCBCR_TO_RGB = np.array(
    [[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=np.float32
)


def _dct_matrix() -> np.ndarray:
    """Orthonormal DCT-II basis D[u, x]; a block's coefficients are D @ block @ D.T."""
    u = np.arange(8)[:, None]
    x = np.arange(8)[None, :]
    d = np.cos((2 * x + 1) * u * np.pi / 16) * 0.5
    d[0] *= 1 / np.sqrt(2)
    return d.astype(np.float32)


DCT = _dct_matrix()


def quality_to_factor(quality: float) -> float:
    """DiffJPEG's table scale: (5000/q)/100 below 50, (200 - 2q)/100 from 50 on."""
    if not 0 < quality <= 100:
        raise ValueError(f"JPEG quality must be in (0, 100], got {quality}")
    return (5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality) / 100.0


def _blocks_dct(plane: np.ndarray, inverse: bool = False) -> np.ndarray:
    """2D (inverse) DCT of every 8x8 block of an (H, W) plane, H and W multiples of 8.

    Two plain matrix products over the whole plane (columns then rows of each block),
    so numpy hands the work to BLAS instead of looping over blocks.
    """
    h, w = plane.shape
    d = DCT.T if inverse else DCT
    cols = np.matmul(d, plane.reshape(h // 8, 8, w))  # along each block's rows axis
    return np.matmul(cols.reshape(h, w // 8, 8), d.T).reshape(h, w)


def quantize_plane(plane: np.ndarray, table: np.ndarray) -> np.ndarray:
    """DCT -> round(coef / table) * table -> inverse DCT of a level-shifted plane."""
    h, w = plane.shape
    coef = _blocks_dct(plane).reshape(h // 8, 8, w // 8, 8)
    step = table[None, :, None, :]
    coef = np.round(coef / step) * step
    return _blocks_dct(coef.reshape(h, w), inverse=True)


def diff_jpeg(image: np.ndarray, quality: float) -> np.ndarray:
    """JPEG round trip of a float HxWx3 RGB image in [0, 1] at a (continuous) quality.

    Returns float32 in [0, 1] (not rounded to 8 bits), same shape as the input.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"diff_jpeg expects an HxWx3 RGB image, got shape {image.shape}")
    factor = np.float32(quality_to_factor(float(quality)))
    h, w = image.shape[:2]
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    padded = np.zeros((hp, wp, 3), dtype=np.float32)
    padded[:h, :w] = image
    ycc = padded.reshape(-1, 3) @ (_RGB_TO_YCBCR.T * np.float32(255.0))
    ycc = ycc.reshape(hp, wp, 3)
    # Chroma: 2x2 mean, then the 128 offset cancels the level shift (value + 128 - 128).
    chroma = ycc[..., 1:].reshape(hp // 2, 2, wp // 2, 2, 2).mean(axis=(1, 3))
    y = quantize_plane(ycc[..., 0] - np.float32(128.0), LUMA_TABLE * factor)
    cb = quantize_plane(np.ascontiguousarray(chroma[..., 0]), CHROMA_TABLE * factor)
    cr = quantize_plane(np.ascontiguousarray(chroma[..., 1]), CHROMA_TABLE * factor)
    out = np.empty((hp, wp, 3), dtype=np.float32)
    out[..., 0] = y + np.float32(128.0)
    out[..., 1] = np.repeat(np.repeat(cb, 2, axis=0), 2, axis=1)
    out[..., 2] = np.repeat(np.repeat(cr, 2, axis=0), 2, axis=1)
    rgb = out[:h, :w].reshape(-1, 3) @ _YCBCR_TO_RGB.T
    return np.clip(rgb.reshape(h, w, 3) * np.float32(1 / 255.0), 0.0, 1.0)
