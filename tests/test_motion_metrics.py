"""Motion metrics from the synthetic ground truth: identity motion scores exactly the
identity error, the true motion ~0, the moving region is the union of the head masks."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from asrth_jax import motion_metrics as mm
from asrth_jax.models.warp import grid_sample_2d, make_coordinate_grid_3d
from data_pipelines import synthetic

SIZE = 64
FIELD = (4, 16, 16)  # (D, H, W) of the deformation: feature resolution SIZE / 4


def _pairs(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """True (B, L, 2) source and driving landmarks of three synthetic pairs that move."""
    videos = synthetic.SyntheticVideos(synthetic.identity_seeds("test", 3), 32, size)
    src = np.stack([videos.landmarks(v, [0])[0] for v in range(3)])
    drv = np.stack([videos.landmarks(v, [t])[0] for v, t in enumerate((9, 17, 25))])
    return src, drv


def _identity_field(batch: int) -> jnp.ndarray:
    """What dense motion predicts when driven by the source keypoints."""
    return jnp.broadcast_to(make_coordinate_grid_3d(*FIELD), (batch, *FIELD, 3))


def _field_from(fn, batch: int) -> np.ndarray:
    """(B, D, H, W, 3) field whose xy at each node is fn(b, node xy), z the identity."""
    grid = np.asarray(make_coordinate_grid_3d(*FIELD))
    out = np.repeat(grid[None], batch, axis=0)
    for b in range(batch):
        out[b, ..., :2] = fn(b, grid[..., :2].reshape(-1, 2)).reshape(*FIELD, 2)
    return out


def test_pixel_convention_is_the_samplers():
    """`pixels_to_grid` is where the model's grid_sample reads a pixel centre, and
    `grid_to_pixels` undoes it."""
    points = np.array([[0.0, 0.0], [63.0, 63.0], [10.25, 40.5], [31.5, 7.0]], np.float32)
    np.testing.assert_allclose(mm.grid_to_pixels(mm.pixels_to_grid(points, SIZE), SIZE),
                               points, atol=1e-5)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    ramp = np.stack([xx, yy], -1)  # each pixel holds its own (x, y)
    read = grid_sample_2d(jnp.asarray(ramp), mm.pixels_to_grid(points, SIZE)[None])[0]
    np.testing.assert_allclose(read, points, atol=1e-4)
    # Non-square images: x uses the width, y the height.
    np.testing.assert_allclose(mm.pixels_to_grid(np.array([[0.0, 0.0]]), (32, 64)),
                               [[-1 + 1 / 64, -1 + 1 / 32]], atol=1e-7)


def test_identity_deformation_scores_exactly_the_identity_error():
    src, drv = _pairs()
    identity = mm.identity_motion_error(src, drv)
    assert identity.shape == (3,) and (np.asarray(identity) > 1.0).all()
    np.testing.assert_allclose(mm.transferred_landmarks(_identity_field(3), drv, SIZE), drv,
                               atol=1e-4)
    np.testing.assert_allclose(mm.landmark_transfer_error(_identity_field(3), src, drv, SIZE),
                               identity, rtol=0, atol=1e-4)
    # and by hand: mean Euclidean landmark distance
    np.testing.assert_allclose(identity, np.linalg.norm(drv - src, axis=-1).mean(-1),
                               rtol=1e-6)


def test_true_affine_motion_scores_zero_and_depth_is_averaged():
    """An analytic warp with known landmarks: drv = A src + t in grid coordinates, so the
    true deformation is src = A^-1 (drv - t) everywhere; a depth-dependent xy offset that
    averages to zero over depth leaves the score at zero (xy is averaged over depth)."""
    src, _ = _pairs()
    a = np.array([[0.93, -0.2], [0.18, 1.05]])
    t = np.array([0.08, -0.05])
    src_g = np.asarray(mm.pixels_to_grid(src, SIZE))
    drv = np.asarray(mm.grid_to_pixels(src_g @ a.T + t, SIZE))
    inverse = np.linalg.inv(a)
    true = _field_from(lambda b, xy: (xy - t) @ inverse.T, 3)
    assert float(mm.identity_motion_error(src, drv).min()) > 1.0
    np.testing.assert_allclose(mm.landmark_transfer_error(true, src, drv, SIZE), 0, atol=1e-3)
    tilted = true.copy()
    tilted[:, :, ..., :2] += np.linspace(-0.1, 0.1, FIELD[0])[None, :, None, None, None]
    np.testing.assert_allclose(mm.landmark_transfer_error(tilted, src, drv, SIZE), 0,
                               atol=1e-3)
    # one slice only shifted: the error is that shift / depth, in pixels
    shifted = true.copy()
    shifted[:, 0, ..., 0] += 0.2
    np.testing.assert_allclose(mm.landmark_transfer_error(shifted, src, drv, SIZE),
                               0.2 / FIELD[0] * SIZE / 2, rtol=1e-3)


def test_true_synthetic_motion_scores_about_zero():
    """The renderer's real 3D head motion, interpolated between its landmarks (thin-plate
    spline from driving to source landmarks) and sampled on the model's coarse grid:
    what a perfect motion field looks like. It scores ~0 beside the identity error."""
    from scipy.interpolate import RBFInterpolator

    src, drv = _pairs()
    src_g, drv_g = (np.asarray(mm.pixels_to_grid(p, SIZE), np.float64) for p in (src, drv))
    true = _field_from(lambda b, xy: RBFInterpolator(drv_g[b], src_g[b],
                                                     kernel="thin_plate_spline")(xy), 3)
    error = np.asarray(mm.landmark_transfer_error(true, src, drv, SIZE))
    identity = np.asarray(mm.identity_motion_error(src, drv))
    assert (error < 0.05 * identity).all(), (error, identity)


def test_moving_region_is_the_union_of_the_head_masks():
    videos = synthetic.SyntheticVideos(synthetic.identity_seeds("test", 1), 32, SIZE)
    masks = videos.head_masks(0, [0, 17])
    region = np.asarray(mm.moving_region(masks[:1], masks[1:]))[0]
    np.testing.assert_array_equal(region, masks[0] | masks[1])
    assert region.sum() > masks[0].sum() and region.sum() > masks[1].sum()
    frames = videos.read_frames(0, [0, 17]).astype(np.float32) / 255.0
    source, driving = frames[:1], frames[1:]
    # copy-source differs from the driver only where a head is: the moving-region L1 is
    # the full-frame L1 concentrated on the region
    full = np.abs(source - driving).mean()
    moving = float(mm.moving_l1(source, driving, masks[:1], masks[1:])[0])
    np.testing.assert_allclose(moving, full * region.size / region.sum(), rtol=1e-5)


def test_masked_l1_averages_over_the_mask_only():
    images = np.zeros((2, 4, 4, 3), np.float32)
    target = np.zeros_like(images)
    target[:, :2] = 0.5  # the top half differs
    mask = np.zeros((2, 4, 4), bool)
    mask[0, :2] = True  # top half: all wrong
    mask[1, 1:3] = True  # half of it wrong
    np.testing.assert_allclose(mm.masked_l1(images, target, mask), [0.5, 0.25])
    assert np.isnan(mm.masked_l1(images, target, np.zeros_like(mask))).all()


def test_draw_landmark_transfer_marks_true_and_sent_points():
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    true = np.array([[10.0, 10.0], [40.0, 50.0]])
    sent = np.array([[20.0, 12.0], [40.0, 50.0]])
    out = mm.draw_landmark_transfer(image, true, sent)
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[30, 5], 128 / 255.0)  # untouched pixels
    assert out[10, 10, 1] > 0.8 and out[10, 10, 0] < 0.5  # green: true source landmark
    ring = out[8:17, 16:25]  # red ring around where the driving landmark was sent
    assert ((ring[..., 0] > 0.8) & (ring[..., 1] < 0.5)).sum() >= 4
    # a landmark sent exactly onto its true position: green dot inside a red ring
    spot = out[46:55, 36:45]
    assert out[50, 40, 1] > 0.8 and ((spot[..., 0] > 0.8) & (spot[..., 1] < 0.5)).any()
    assert out[11, 15].sum() != pytest.approx(3 * 128 / 255.0)  # the line joins them


@pytest.mark.slow
def test_model_deformation_identity_random_and_true_motion():
    """Through the real inference path: the model driven by its own source predicts the
    identity field and scores the identity error; a random-init model scores something
    else; the true motion on the same grid scores ~0."""
    from scipy.interpolate import RBFInterpolator
    from test_inference import random_models
    from tiny_train_config import TEST_MODEL

    from asrth_jax import config_lib, inference

    gen, _ = random_models(config_lib.model_config(TEST_MODEL), seed=0)
    animator = inference.make_animator(gen, batch_size=4)
    size = 32  # the tiny model's size: one small compilation
    videos = synthetic.SyntheticVideos(synthetic.identity_seeds("test", 1), 32, size)
    times = [0, 9, 17, 25]
    frames = videos.read_frames(0, times)
    lms = videos.landmarks(0, times)
    src_lm, drv_lm = np.broadcast_to(lms[:1], lms.shape), lms
    src = animator.encode_source(frames[0])
    motion = animator.prepare_motion(src, relative=False)
    pred, kp, field = animator.render_with_deformation(src, frames, motion)
    assert field.shape[0] == len(times) and field.shape[-1] == 3 and field.ndim == 5
    assert pred.shape == frames.shape and kp.shape == (len(times), 4, 3)
    _, still_kp, still = animator.render_with_deformation(src, frames[:1], motion)
    np.testing.assert_allclose(still_kp[0], np.asarray(src.kp_source[0]), atol=1e-5)
    still = np.broadcast_to(still, (len(times), *still.shape[1:]))
    identity = np.asarray(mm.identity_motion_error(src_lm, drv_lm))
    no_motion = np.asarray(mm.landmark_transfer_error(still, src_lm, drv_lm, size))
    np.testing.assert_allclose(no_motion, identity, atol=1e-3)
    model = np.asarray(mm.landmark_transfer_error(field, src_lm, drv_lm, size))
    assert np.isfinite(model).all() and np.abs(model[1:] - identity[1:]).max() > 1e-3
    grid = np.asarray(make_coordinate_grid_3d(*field.shape[1:4]))
    true = np.repeat(grid[None], len(times), axis=0)
    for b in range(1, len(times)):
        src_g, drv_g = (np.asarray(mm.pixels_to_grid(p, size), np.float64)
                        for p in (src_lm[b], drv_lm[b]))
        xy = RBFInterpolator(drv_g, src_g, kernel="thin_plate_spline")(
            grid[..., :2].reshape(-1, 2))
        true[b, ..., :2] = xy.reshape(*field.shape[1:4], 2)
    perfect = np.asarray(mm.landmark_transfer_error(true, src_lm, drv_lm, size))
    # an 8x8 field (32 px images) cannot follow the motion between its nodes exactly
    assert (perfect < 0.25).all() and perfect.mean() < 0.1 * identity.mean()
    print(f"landmark error px (frames {times[1:]}): random-init model "
          f"{np.round(model[1:], 3)}, identity {np.round(identity[1:], 3)}, "
          f"no-motion {np.round(no_motion[1:], 3)}, true motion {np.round(perfect[1:], 3)}")


def test_ground_truth_of_a_batch_of_pairs():
    videos = synthetic.SyntheticVideos(synthetic.identity_seeds("test", 2), 16, 32)
    gt = mm.ground_truth(videos, np.array([1, 0]), np.array([[0, 5], [0, 11]]))
    assert set(gt) == set(mm.TRUTH_KEYS) and mm.has_ground_truth(videos)
    np.testing.assert_array_equal(gt["driving_landmarks"][0], videos.landmarks(1, [5])[0])
    np.testing.assert_array_equal(gt["source_landmarks"][1], videos.landmarks(0, [0])[0])
    np.testing.assert_array_equal(gt["driving_head_mask"][1], videos.head_masks(0, [11])[0])
    assert gt["source_head_mask"].shape == (2, 32, 32) and gt["source_head_mask"].dtype == bool
    assert gt["driving_landmarks"].shape == (2, len(synthetic.LANDMARK_NAMES), 2)
    assert not mm.has_ground_truth(object())


def test_landmark_motion_loss_is_the_transfer_error_in_grid_units_and_trains_the_field():
    """The loss of `loss.landmark_motion`: 0 for the true motion; for the identity field,
    the mean |dx| + |dy| of the landmark motion in grid units (2 / SIZE per pixel); its
    gradient reaches the deformation and not the landmarks."""
    import jax

    from asrth_jax import losses

    src, drv = _pairs()
    a, t = np.array([[0.93, -0.2], [0.18, 1.05]]), np.array([0.08, -0.05])
    drv = np.asarray(mm.grid_to_pixels(np.asarray(mm.pixels_to_grid(src, SIZE)) @ a.T + t,
                                       SIZE))
    true = jnp.asarray(_field_from(lambda b, xy: (xy - t) @ np.linalg.inv(a).T, 3))
    np.testing.assert_allclose(losses.landmark_motion_loss(true, src, drv, SIZE), 0,
                               atol=1e-4)
    identity = losses.landmark_motion_loss(_identity_field(3), src, drv, (SIZE, SIZE))
    np.testing.assert_allclose(identity, np.abs(drv - src).sum(-1).mean() * 2 / SIZE,
                               rtol=1e-4)
    field_grad, src_grad, drv_grad = jax.grad(losses.landmark_motion_loss, argnums=(0, 1, 2))(
        _identity_field(3), jnp.asarray(src), jnp.asarray(drv), SIZE)
    assert float(jnp.abs(field_grad).sum()) > 0
    np.testing.assert_array_equal(src_grad, 0.0)


def test_static_cells_keep_one_cell_away_from_the_moving_mask():
    mask = np.zeros((2, SIZE, SIZE), bool)
    mask[0, 20:40, 24:44] = True  # rows 20..39 -> cells 5..9, columns 24..43 -> 6..10
    static = np.asarray(mm.static_cells(mask, FIELD[1:]))
    assert static.shape == (2, *FIELD[1:])
    expected = np.ones(FIELD[1:])
    expected[4:11, 5:12] = 0.0  # the head's cells and one cell around them
    np.testing.assert_array_equal(static[0], expected)
    np.testing.assert_array_equal(static[1], 1.0)  # no head: all static
    with pytest.raises(ValueError, match="does not tile"):
        mm.static_cells(np.zeros((1, 60, 64), bool), FIELD[1:])


def test_background_motion_loss_is_zero_for_no_motion_and_ignores_the_head():
    """The loss of `loss.background_motion`: the identity field scores 0; any motion near
    the head is free; a shift of the whole field costs its size on the background only."""
    import jax

    from asrth_jax import losses

    mask = np.zeros((1, SIZE, SIZE), bool)
    mask[0, 20:40, 24:44] = True
    identity = _identity_field(1)
    assert float(losses.background_motion_loss(identity, mask)) == 0.0
    head_moves = np.array(identity)
    head_moves[:, :, 4:11, 5:12, :2] += 0.3
    assert float(losses.background_motion_loss(head_moves, mask)) == 0.0
    shifted = np.array(identity)
    shifted[..., 0] += 0.1
    shifted[..., 2] -= 0.05
    np.testing.assert_allclose(losses.background_motion_loss(shifted, mask), 0.15, rtol=1e-5)
    grad = np.asarray(jax.grad(losses.background_motion_loss)(jnp.asarray(shifted), mask))
    assert (grad[:, :, 4:11, 5:12] == 0).all() and np.abs(grad).sum() > 0
