"""Training losses, as pure functions returning float32 scalars.

Formulas follow the face-vid2vid reimplementation that AdaSR builds on
(`GeneratorFullModel` / `DiscriminatorFullModel` in modules/model.py). Loss *weights*
that multiply a whole term live in the config (DESIGN.md, "Losses"); only per-layer
weights that are part of a term's definition (perceptual, feature matching) are
arguments here. The train step multiplies each returned value by its config weight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from asrth_jax import motion_metrics
from asrth_jax.models.antialias import anti_alias_downsample
from asrth_jax.models.head_pose import bins_to_degrees
from asrth_jax.models.warp import make_coordinate_grid_3d
from asrth_jax.transforms import TransformParams, warp_coordinates

FeaturesFn = Callable[[jax.Array], Sequence[jax.Array]]
Maps = jax.Array | Sequence[jax.Array]


def _f32(x: jax.Array) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _as_list(maps: Maps) -> list[jax.Array]:
    # A discriminator returns one prediction map per scale; accept a bare array too.
    # Anything with a shape is one map (jax or numpy); otherwise a sequence of maps.
    return [maps] if hasattr(maps, "shape") else list(maps)


def l1_loss(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error (the L1 reconstruction term)."""
    return _f32(jnp.abs(_f32(prediction) - _f32(target)).mean())


def perceptual_pyramid_loss(
    features_fn: FeaturesFn,
    prediction: jax.Array,
    target: jax.Array,
    scales: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
    layer_weights: Sequence[float] = (10.0,) * 5,
) -> jax.Array:
    """Sum over pyramid scales and layers of w_i * mean|phi_i(pred_s) - phi_i(target_s)|.

    Both images go through `anti_alias_downsample` at each scale (the reference
    `ImagePyramide`); target features carry no gradient (reference `.detach()`).
    Prediction and target share one `features_fn` call per scale (batch concat) so the
    network runs once per scale.
    """
    batch = prediction.shape[0]
    total = jnp.zeros((), jnp.float32)
    for scale in scales:
        both = anti_alias_downsample(jnp.concatenate([prediction, target], axis=0), scale)
        features = features_fn(both)
        if len(features) < len(layer_weights):
            raise ValueError(
                f"features_fn gave {len(features)} maps, {len(layer_weights)} weights given"
            )
        for weight, feat in zip(layer_weights, features, strict=False):
            if weight == 0:
                continue
            fake, real = feat[:batch], jax.lax.stop_gradient(feat[batch:])
            total = total + weight * jnp.abs(_f32(fake) - _f32(real)).mean()
    return total


def generator_gan_loss(fake_maps: Maps, mode: str = "hinge") -> jax.Array:
    """Generator adversarial term, summed over discriminator scales.

    hinge: -mean(D(fake)); ls: mean((1 - D(fake))^2).
    """
    total = jnp.zeros((), jnp.float32)
    for fake in _as_list(fake_maps):
        fake = _f32(fake)
        if mode == "hinge":
            total = total - fake.mean()
        elif mode == "ls":
            total = total + ((1.0 - fake) ** 2).mean()
        else:
            raise ValueError(f"Unexpected gan_mode {mode!r} (use 'hinge' or 'ls')")
    return total


def discriminator_gan_loss(real_maps: Maps, fake_maps: Maps, mode: str = "hinge") -> jax.Array:
    """Discriminator adversarial term, summed over scales.

    hinge: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))
    (= the reference's -mean(min(real - 1, 0)) - mean(min(-fake - 1, 0)));
    ls: mean((1 - D(real))^2 + D(fake)^2).
    """
    reals, fakes = _as_list(real_maps), _as_list(fake_maps)
    if len(reals) != len(fakes):
        raise ValueError(f"{len(reals)} real maps vs {len(fakes)} fake maps")
    total = jnp.zeros((), jnp.float32)
    for real, fake in zip(reals, fakes, strict=True):
        real, fake = _f32(real), _f32(fake)
        if mode == "hinge":
            total = total + jax.nn.relu(1.0 - real).mean() + jax.nn.relu(1.0 + fake).mean()
        elif mode == "ls":
            total = total + ((1.0 - real) ** 2 + fake**2).mean()
        else:
            raise ValueError(f"Unexpected gan_mode {mode!r} (use 'hinge' or 'ls')")
    return total


def feature_matching_loss(
    real_features: Sequence[jax.Array],
    fake_features: Sequence[jax.Array],
    layer_weights: Sequence[float] = (10.0, 10.0, 10.0, 10.0),
) -> jax.Array:
    """sum_i w_i * mean|F_i(real) - F_i(fake)| over one discriminator's feature maps.

    Pairs are zipped like the reference (extra maps beyond the weights are ignored);
    zero weights skip the layer. For several discriminator scales, call per scale
    and add.
    """
    total = jnp.zeros((), jnp.float32)
    for weight, real, fake in zip(layer_weights, real_features, fake_features, strict=False):
        if weight == 0:
            continue
        total = total + weight * jnp.abs(_f32(real) - _f32(fake)).mean()
    return total


def equivariance_value_loss(
    kp_driving: jax.Array, kp_transformed: jax.Array, params: TransformParams
) -> jax.Array:
    """mean|kp_driving_xy - T(kp_transformed_xy)|.

    `kp_transformed` are keypoints detected on `transform_frame(params, driving)`;
    mapping them back with the same warp must land on the driving keypoints. Only x, y
    take part (the reference projects 3D keypoints to 2D by dropping z).
    """
    back = warp_coordinates(params, _f32(kp_transformed[..., :2]))
    return _f32(jnp.abs(_f32(kp_driving[..., :2]) - back).mean())


def keypoint_prior_loss(
    kp: jax.Array, distance_margin: float = 0.1, target_depth: float = 0.33
) -> jax.Array:
    """Keypoint spread + depth prior on (B, K, 3) keypoints.

    sum over ALL ordered pairs (i, j), diagonal included, of
    mean_b max(0, margin - ||k_i - k_j + 1e-6||^2)  +  mean_b |mean_k z - target|.
    The diagonal and the 1e-6 come from the reference's double loop over
    `F.pairwise_distance` (eps=1e-6 added to the difference); the diagonal adds the
    constant K * (margin - 3e-12) and no gradient. Squared distances need no sqrt, so
    coincident keypoints have finite gradients.
    """
    kp = _f32(kp)
    diff = kp[:, :, None, :] - kp[:, None, :, :] + 1e-6
    dist2 = (diff**2).sum(-1)  # (B, K, K)
    spread = jax.nn.relu(distance_margin - dist2).mean(0).sum()
    depth = jnp.abs(kp[:, :, 2].mean(-1) - target_depth).mean()
    return spread + depth


def headpose_loss(
    predicted: Mapping[str, jax.Array], target_degrees: Mapping[str, jax.Array]
) -> jax.Array:
    """sum over yaw, pitch, roll of mean_b |deg(pred) - target| (degrees).

    ``predicted`` holds the HEEstimator's (B, 66) bin logits under 'yaw', 'pitch',
    'roll'; ``target_degrees`` the teacher's (B,) angles under the same names (HopeNet's
    bins through `bins_to_degrees`, or a dataset's true pose). The target is fixed.
    """
    total = jnp.zeros((), jnp.float32)
    for name in ("yaw", "pitch", "roll"):
        target = jax.lax.stop_gradient(_f32(target_degrees[name]))
        total = total + jnp.abs(bins_to_degrees(predicted[name]) - target).mean()
    return total


def head_translation_loss(translation: jax.Array, target_xy: jax.Array) -> jax.Array:
    """mean_b sum_xy |t - target|: the estimator's (B, 3) translation against a (B, 2)
    true head centre in the keypoint frame (depth is left free). The target is fixed."""
    target = jax.lax.stop_gradient(_f32(target_xy))
    return jnp.abs(_f32(translation)[:, :2] - target).sum(-1).mean()


def landmark_keypoint_loss(keypoints: jax.Array, landmarks_xy: jax.Array) -> jax.Array:
    """mean_b mean_k sum_xy |kp_k - landmark_k| over the first min(K, L) keypoints: the
    (B, K, 3) keypoints' x, y against (B, L, 2) true landmarks in the keypoint frame
    (depth is left free). Keypoint k is taught landmark k; the target is fixed."""
    count = min(keypoints.shape[1], landmarks_xy.shape[1])
    target = jax.lax.stop_gradient(_f32(landmarks_xy[:, :count]))
    return jnp.abs(_f32(keypoints)[:, :count, :2] - target).sum(-1).mean()


def landmark_motion_loss(deformation: jax.Array, source_landmarks: jax.Array,
                         driving_landmarks: jax.Array,
                         image_size: int | tuple[int, int]) -> jax.Array:
    """mean_b mean_l sum_xy |deformation(driving landmark l) - source landmark l|: the
    landmark transfer error (`motion_metrics`) as an L1 in grid coordinates, for a
    (B, D, H, W, 3) deformation and (B, L, 2) true landmark pixels. The targets are
    fixed; the gradient reaches the dense-motion mask and the keypoints it blends."""
    sent = motion_metrics.transferred_grid(deformation, driving_landmarks, image_size)
    target = jax.lax.stop_gradient(motion_metrics.pixels_to_grid(source_landmarks, image_size))
    return jnp.abs(sent - target).sum(-1).mean()


def background_motion_loss(deformation: jax.Array, moving_mask: jax.Array) -> jax.Array:
    """Mean over the static-background nodes (`motion_metrics.static_cells` of a (B, H, W)
    moving mask) of sum_xyz |deformation - identity grid|, every depth slice: the
    background does not move, so the dense motion should read it where it is. Zero
    where a batch has no static node."""
    _, depth, height, width, _ = deformation.shape
    static = motion_metrics.static_cells(moving_mask, (height, width))
    identity = make_coordinate_grid_3d(depth, height, width)
    error = jnp.abs(_f32(deformation) - identity).sum(-1).mean(1)  # (B, h, w)
    return (error * static).sum() / jnp.maximum(static.sum(), 1.0)


def expression_loss(exp: jax.Array) -> jax.Array:
    """Batch mean of the per-sample L1 norm of the (B, 3K) expression deltas.

    The reference is `torch.norm(exp, p=1, dim=-1).mean()`: a SUM of |.| over the 3K
    values, not a mean, averaged over the batch.
    """
    exp = _f32(exp).reshape(exp.shape[0], -1)
    return jnp.abs(exp).sum(-1).mean()
