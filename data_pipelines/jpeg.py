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

import functools

import cv2
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
_IDCT = np.ascontiguousarray(DCT.T)


def quality_to_factor(quality: float) -> float:
    """DiffJPEG's table scale: (5000/q)/100 below 50, (200 - 2q)/100 from 50 on."""
    if not 0 < quality <= 100:
        raise ValueError(f"JPEG quality must be in (0, 100], got {quality}")
    return (5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality) / 100.0


def _rows_dct(plane: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Apply ``basis`` to each run of 8 pixels along the rows of an (H, W) plane.

    cv2.transform treats the 8 pixels as channels of one SIMD pass; BLAS matmuls this
    small are slower and spin up threads a data-loader worker must not take.
    """
    h, w = plane.shape
    return cv2.transform(np.ascontiguousarray(plane).reshape(h, w // 8, 8), basis).reshape(h, w)


def _blocks_dct(plane: np.ndarray, inverse: bool = False) -> np.ndarray:
    """2D (inverse) DCT of every 8x8 block of an (H, W) plane, H and W multiples of 8."""
    basis = _IDCT if inverse else DCT
    # cv2.transpose: a contiguous transposed copy, several times faster than numpy's.
    return cv2.transpose(_rows_dct(cv2.transpose(_rows_dct(plane, basis)), basis))


def quantize_plane(plane: np.ndarray, table: np.ndarray) -> np.ndarray:
    """DCT -> round(coef / step) * step -> inverse DCT of a level-shifted (H, W) plane.

    ``table`` is either one 8x8 step table indexed [vertical, horizontal frequency] or a
    full (H, W) map of steps (one per coefficient).
    """
    h, w = plane.shape
    step = table if table.shape == (h, w) else np.tile(table, (h // 8, w // 8))
    step = step.astype(np.float32, copy=False)
    coef = np.round(_blocks_dct(plane) / step)
    return _blocks_dct(coef * step, inverse=True)


@functools.lru_cache(maxsize=16)
def _step_map(hp: int, wp: int) -> np.ndarray:
    """Unscaled steps for the stacked planes [Y; Cb | Cr] of a padded hp x wp image."""
    luma = np.tile(LUMA_TABLE, (hp // 8, wp // 8))
    chroma = np.tile(CHROMA_TABLE, (hp // 16, wp // 8))
    out = np.concatenate([luma, chroma])
    out.setflags(write=False)
    return out


def diff_jpeg(image: np.ndarray, quality: float) -> np.ndarray:
    """JPEG round trip of a float HxWx3 RGB image in [0, 1] at a (continuous) quality.

    Returns float32 in [0, 1] (not rounded to 8 bits), same shape as the input.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"diff_jpeg expects an HxWx3 RGB image, got shape {image.shape}")
    factor = np.float32(quality_to_factor(float(quality)))
    h, w = image.shape[:2]
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    # Zero (black) padding to whole 16x16 macroblocks, as DiffJPEG does.
    padded = cv2.copyMakeBorder(image.astype(np.float32, copy=False), 0, hp - h, 0, wp - w,
                                cv2.BORDER_CONSTANT, value=0)
    ycc = cv2.transform(padded, _RGB_TO_YCBCR * np.float32(255.0))
    # One plane [Y; Cb | Cr] so all three are coded in the same four passes. Chroma stays
    # centred on 0: DiffJPEG's +128 and its DCT's -128 cancel.
    planes = np.empty((hp + hp // 2, wp), dtype=np.float32)
    planes[:hp] = ycc[..., 0] - np.float32(128.0)
    chroma = cv2.resize(ycc[..., 1:], (wp // 2, hp // 2), interpolation=cv2.INTER_AREA)
    planes[hp:, : wp // 2] = chroma[..., 0]
    planes[hp:, wp // 2 :] = chroma[..., 1]
    planes = quantize_plane(planes, _step_map(hp, wp) * factor)
    out = np.empty((h, w, 3), dtype=np.float32)
    out[..., 0] = planes[:h, :w] + np.float32(128.0)
    cbcr = cv2.merge([planes[hp:, : wp // 2], planes[hp:, wp // 2 :]])
    out[..., 1:] = cv2.resize(cbcr, (wp, hp), interpolation=cv2.INTER_NEAREST)[:h, :w]
    rgb = cv2.transform(out, _YCBCR_TO_RGB * np.float32(1 / 255.0))
    return np.clip(rgb, 0.0, 1.0, out=rgb)
