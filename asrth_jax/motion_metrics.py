"""Motion metrics that need no landmark detector: the synthetic renderer's ground truth.

The generator's dense motion (`models/dense_motion.py`) predicts, for every point of
the DRIVING frame, where to read the SOURCE: a deformation field (B, D, H, W, 3) of
(x, y, z) in [-1, 1] grid coordinates. Given the true landmarks of both frames:

- landmark transfer error: the deformation evaluated at each true driving landmark
  should land on the same landmark in the source; the pixel distance, mean over
  landmarks (one value per example; evaluations then take the mean over frames);
- identity-motion error: the same with no motion at all, |driving - source| per
  landmark; a model that does not move scores exactly this, the true motion ~0;
- moving-region L1: the L1 restricted to the union of the source and driving head
  masks, where motion changes the picture (the background, equal in both frames,
  would otherwise dilute every difference).

Coordinates. Landmarks are pixels (x, y) with pixel centres at integers. A deformation
value v is read by `grid_sample` with align_corners=False, so its pixel is
((v + 1) * size - 1) / 2 (`grid_to_pixels`); the inverse `pixels_to_grid` places a
driving landmark in the same normalised space, and the field is interpolated there as
the function of position it was built as: its node j holds the motion of coordinate
2 j / (n - 1) - 1 (the reference's coordinate grid, [-1, 1] inclusive). With these two
conventions the identity field (the coordinate grid itself, which a model driven by its
own keypoints predicts) maps every landmark onto itself, so it scores exactly the
identity-motion error.

Depth. The decoder folds all D slices into channels, so no slice is "the" surface the
landmark lies on; the xy of the deformation is averaged over depth with equal weights
(exact for any warp whose xy does not depend on depth, e.g. the identity). z is not
scored: the ground truth is 2D.

Pure jax.numpy functions (numpy arrays in, jax arrays out), so the same code runs in the
jitted periodic evaluation and on the host in `python -m asrth_jax.evaluate`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Names as reported beside l1/psnr/ssim (lower is better for both).
MOTION_METRICS = ("landmark_error", "moving_l1")
HIGHER_IS_BETTER = {"landmark_error": False, "moving_l1": False}
# Batch keys of the ground truth (`ground_truth`), beside the images.
TRUTH_KEYS = ("source_landmarks", "driving_landmarks", "source_head_mask",
              "driving_head_mask")


def has_ground_truth(videos: Any) -> bool:
    """Whether a video collection knows its frames' landmarks and head masks (the
    synthetic renderer's `SyntheticVideos` does; real clips do not)."""
    return hasattr(videos, "landmarks") and hasattr(videos, "head_masks")


def ground_truth(videos: Any, video_index: np.ndarray, frame_index: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """`TRUTH_KEYS` arrays for a batch of (source, driving) pairs: (B,) video indices and
    (B, 2) frame indices -> (B, L, 2) float32 landmark pixels and (B, H, W) bool masks."""
    out: dict[str, list] = {key: [] for key in TRUTH_KEYS}
    for video, (src, drv) in zip(np.asarray(video_index), np.asarray(frame_index),
                                 strict=True):
        lms = videos.landmarks(int(video), [int(src), int(drv)])
        masks = videos.head_masks(int(video), [int(src), int(drv)])
        for key, value in zip(TRUTH_KEYS, (lms[0], lms[1], masks[0], masks[1]), strict=True):
            out[key].append(value)
    return {key: np.stack(values) for key, values in out.items()}


def _size_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def pixels_to_grid(points: jax.Array, image_size: int | tuple[int, int]) -> jax.Array:
    """(..., 2) pixel (x, y), centres at integers -> grid coordinates (align_corners=False)."""
    height, width = _size_hw(image_size)
    scale = jnp.asarray([width, height], jnp.float32)
    return (2.0 * jnp.asarray(points, jnp.float32) + 1.0) / scale - 1.0


def grid_to_pixels(coords: jax.Array, image_size: int | tuple[int, int]) -> jax.Array:
    """Inverse of `pixels_to_grid`: where `grid_sample` reads a grid coordinate."""
    height, width = _size_hw(image_size)
    scale = jnp.asarray([width, height], jnp.float32)
    return ((jnp.asarray(coords, jnp.float32) + 1.0) * scale - 1.0) / 2.0


def _sample_xy(field: jax.Array, coords: jax.Array) -> jax.Array:
    """One example: bilinear xy of a (D, H, W, 3) field at (L, 2) grid coordinates,
    nodes at 2 j / (n - 1) - 1; the edge cells extend linearly beyond the last nodes
    (a linear field stays exact everywhere). Returns (D, L, 2)."""
    _, h, w, _ = field.shape

    def axis(coord, n):
        pos = (coord + 1.0) * 0.5 * (n - 1)
        low = jnp.clip(jnp.floor(pos), 0, max(n - 2, 0)).astype(jnp.int32)
        return low, jnp.minimum(low + 1, n - 1), pos - low

    x0, x1, fx = axis(coords[:, 0], w)
    y0, y1, fy = axis(coords[:, 1], h)
    xy = field[..., :2].astype(jnp.float32)
    top = xy[:, y0, x0] * (1 - fx)[:, None] + xy[:, y0, x1] * fx[:, None]
    bottom = xy[:, y1, x0] * (1 - fx)[:, None] + xy[:, y1, x1] * fx[:, None]
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def transferred_grid(deformation: jax.Array, driving_landmarks: jax.Array,
                     image_size: int | tuple[int, int]) -> jax.Array:
    """(B, L, 2) grid coordinates where the deformation (B, D, H, W, 3) sends each true
    driving landmark (B, L, 2 pixels); xy averaged over depth (see the module doc).
    Differentiable in the deformation (`losses.landmark_motion_loss` trains on it)."""
    coords = pixels_to_grid(driving_landmarks, image_size)
    sampled = jax.vmap(_sample_xy)(jnp.asarray(deformation), coords)  # (B, D, L, 2)
    return sampled.mean(axis=1)


def transferred_landmarks(deformation: jax.Array, driving_landmarks: jax.Array,
                          image_size: int | tuple[int, int]) -> jax.Array:
    """(B, L, 2) source pixels where the deformation sends each true driving landmark."""
    return grid_to_pixels(transferred_grid(deformation, driving_landmarks, image_size),
                          image_size)


def landmark_transfer_error(deformation: jax.Array, source_landmarks: jax.Array,
                            driving_landmarks: jax.Array,
                            image_size: int | tuple[int, int]) -> jax.Array:
    """(B,) mean over landmarks of the pixel distance between where the deformation sends
    each true driving landmark and the true source landmark."""
    sent = transferred_landmarks(deformation, driving_landmarks, image_size)
    return landmark_distance(sent, source_landmarks)


def identity_motion_error(source_landmarks: jax.Array, driving_landmarks: jax.Array
                          ) -> jax.Array:
    """(B,) mean |driving - source| landmark distance in pixels: the transfer error of
    no motion at all (the floor a model must beat)."""
    return landmark_distance(driving_landmarks, source_landmarks)


def landmark_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    """(B,) mean over landmarks of the pixel distance between (B, L, 2) point sets."""
    diff = jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)
    return jnp.sqrt(jnp.square(diff).sum(-1)).mean(-1)


def static_cells(moving_mask: jax.Array, field_hw: tuple[int, int]) -> jax.Array:
    """(B, h, w) float32, 1 at the nodes of an (h, w) deformation field that lie on static
    background: no pixel of a (B, H, W) moving mask in the node's H/h x W/w block or in
    its 8 neighbours. The margin covers the half-pixel-to-cell offset between the field's
    nodes (2 j / (n - 1) - 1) and the pixel blocks, and the smooth fall-off of the head's
    motion. H, W must be multiples of h, w (the generator downsamples by powers of 2)."""
    mask = jnp.asarray(moving_mask, bool)
    batch, height, width = mask.shape
    cells_h, cells_w = field_hw
    if height % cells_h or width % cells_w:
        raise ValueError(f"a {height}x{width} mask does not tile a {cells_h}x{cells_w} field")
    head = mask.reshape(batch, cells_h, height // cells_h, cells_w, width // cells_w)
    head = head.any(axis=(2, 4)).astype(jnp.float32)
    near_head = jax.lax.reduce_window(head, 0.0, jax.lax.max, (1, 3, 3), (1, 1, 1), "SAME")
    return 1.0 - near_head


def moving_region(source_mask: jax.Array, driving_mask: jax.Array) -> jax.Array:
    """(B, H, W) bool union of the two head masks: every pixel motion can change."""
    return jnp.logical_or(jnp.asarray(source_mask, bool), jnp.asarray(driving_mask, bool))


def masked_l1(images: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """(B,) mean absolute error of NHWC images over the pixels of a (B, H, W) mask
    (all channels); NaN for an empty mask (no pixels to judge)."""
    weight = jnp.asarray(mask, jnp.float32)[..., None]
    err = jnp.abs(jnp.asarray(images, jnp.float32) - jnp.asarray(target, jnp.float32))
    total = (err * weight).sum(axis=(1, 2, 3))
    count = weight.sum(axis=(1, 2, 3)) * err.shape[-1]
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), jnp.nan)


def moving_l1(images: jax.Array, target: jax.Array, source_mask: jax.Array,
              driving_mask: jax.Array) -> jax.Array:
    """(B,) L1 of `images` against `target` on `moving_region(source_mask, driving_mask)`."""
    return masked_l1(images, target, moving_region(source_mask, driving_mask))


def draw_landmark_transfer(image: np.ndarray, source_landmarks: np.ndarray,
                           sent_landmarks: np.ndarray) -> np.ndarray:
    """Float (H, W, 3) copy of the SOURCE `image` with its true landmarks (green dots),
    where the model sends the true driving landmarks (red rings) and a line joining each
    pair: a green dot inside its red ring is a landmark the motion follows exactly."""
    import cv2

    image = np.asarray(image)
    scale = 1.0 / 255.0 if image.dtype == np.uint8 else 1.0
    canvas = np.ascontiguousarray(np.clip(image.astype(np.float32) * scale, 0.0, 1.0))
    size = canvas.shape[0]
    radius = max(1, size // 128)
    shift = 4  # sub-pixel drawing: errors below a pixel still show

    def pt(p: np.ndarray) -> tuple[int, int]:
        p = np.nan_to_num(np.clip(p, -4 * size, 5 * size))
        return int(round(float(p[0]) * (1 << shift))), int(round(float(p[1]) * (1 << shift)))

    for true, sent in zip(np.asarray(source_landmarks), np.asarray(sent_landmarks),
                          strict=True):
        cv2.line(canvas, pt(true), pt(sent), (1.0, 1.0, 0.2), 1, cv2.LINE_AA, shift)
        cv2.circle(canvas, pt(true), radius << shift, (0.1, 1.0, 0.1), -1, cv2.LINE_AA, shift)
        cv2.circle(canvas, pt(sent), (radius + 1) << shift, (1.0, 0.1, 0.1), 1, cv2.LINE_AA,
                   shift)
    return canvas
