"""Loss formulas against direct numpy transcriptions of the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asrth_jax import losses
from asrth_jax.models.antialias import anti_alias_downsample
from asrth_jax.transforms import sample_transform_params, warp_coordinates

RNG = np.random.default_rng(0)


def _scalar_f32(x):
    assert x.shape == () and x.dtype == jnp.float32
    return float(x)


def test_l1():
    a, b = RNG.random((2, 4, 4, 3)), RNG.random((2, 4, 4, 3))
    assert _scalar_f32(losses.l1_loss(a, b)) == pytest.approx(np.abs(a - b).mean(), rel=1e-5)


def test_perceptual_pyramid_value_and_stop_gradient():
    pred = jnp.asarray(RNG.random((2, 16, 16, 3), dtype=np.float32))
    target = jnp.asarray(RNG.random((2, 16, 16, 3), dtype=np.float32))

    def feats(x):
        return [x, 2.0 * x**2, x.mean(-1, keepdims=True)]

    weights = (1.0, 0.0, 3.0)
    got = losses.perceptual_pyramid_loss(feats, pred, target, (1.0, 0.5), weights)
    want = 0.0
    for s in (1.0, 0.5):
        p, t = anti_alias_downsample(pred, s), anti_alias_downsample(target, s)
        for w, fp, ft in zip(weights, feats(p), feats(t), strict=True):
            want += w * float(jnp.abs(fp - ft).mean())
    assert _scalar_f32(got) == pytest.approx(want, rel=1e-5)
    # The target side is detached: d loss / d target == 0.
    g = jax.grad(lambda t: losses.perceptual_pyramid_loss(feats, pred, t, (1.0, 0.5), weights))(
        target
    )
    assert float(jnp.abs(g).max()) == 0.0
    with pytest.raises(ValueError):
        losses.perceptual_pyramid_loss(feats, pred, target, (1.0,), (1.0,) * 5)


def test_gan_losses():
    real = [RNG.normal(size=(2, 5, 5, 1)), RNG.normal(size=(2, 3, 3, 1))]
    fake = [RNG.normal(size=(2, 5, 5, 1)), RNG.normal(size=(2, 3, 3, 1))]
    want_g_hinge = sum(-f.mean() for f in fake)
    want_g_ls = sum(((1 - f) ** 2).mean() for f in fake)
    # Reference hinge D form, with min(., 0).
    want_d_hinge = sum(
        -np.minimum(r - 1, 0).mean() - np.minimum(-f - 1, 0).mean()
        for r, f in zip(real, fake, strict=True)
    )
    want_d_ls = sum(((1 - r) ** 2 + f**2).mean() for r, f in zip(real, fake, strict=True))
    assert _scalar_f32(losses.generator_gan_loss(fake, "hinge")) == pytest.approx(
        want_g_hinge, 1e-5
    )
    assert _scalar_f32(losses.generator_gan_loss(fake, "ls")) == pytest.approx(want_g_ls, 1e-5)
    got_d = losses.discriminator_gan_loss(real, fake, "hinge")
    assert _scalar_f32(got_d) == pytest.approx(want_d_hinge, 1e-5)
    got_d = losses.discriminator_gan_loss(real, fake, "ls")
    assert _scalar_f32(got_d) == pytest.approx(want_d_ls, 1e-5)
    # A single array is one scale, not a sequence of rows.
    single = losses.generator_gan_loss(fake[0], "hinge")
    assert _scalar_f32(single) == pytest.approx(-fake[0].mean(), 1e-5)
    with pytest.raises(ValueError):
        losses.generator_gan_loss(fake, "wgan")


def test_feature_matching():
    real = [RNG.random((2, 8, 8, 4)), RNG.random((2, 4, 4, 8)), RNG.random((2, 2, 2, 8))]
    fake = [RNG.random((2, 8, 8, 4)), RNG.random((2, 4, 4, 8)), RNG.random((2, 2, 2, 8))]
    weights = (10.0, 0.0, 5.0)
    want = 10 * np.abs(real[0] - fake[0]).mean() + 5 * np.abs(real[2] - fake[2]).mean()
    got = losses.feature_matching_loss(real, fake, weights)
    assert _scalar_f32(got) == pytest.approx(want, rel=1e-5)


def test_equivariance_value():
    params = sample_transform_params(jax.random.key(0), 2, 0.05, 0.005, 5)
    kp_t = jnp.asarray(RNG.uniform(-1, 1, (2, 15, 3)).astype(np.float32))
    kp_d_xy = warp_coordinates(params, kp_t[..., :2])
    kp_d = jnp.concatenate([kp_d_xy, jnp.full((2, 15, 1), 5.0)], -1)  # z is ignored
    assert _scalar_f32(losses.equivariance_value_loss(kp_d, kp_t, params)) < 1e-6
    shifted = kp_d.at[..., 0].add(0.2)
    got = losses.equivariance_value_loss(shifted, kp_t, params)
    assert _scalar_f32(got) == pytest.approx(0.1, rel=1e-4)  # 0.2 on x, 0 on y


def test_keypoint_prior_matches_reference_loop():
    kp = RNG.uniform(-0.3, 0.3, (3, 6, 3)).astype(np.float32)
    total = 0.0
    for i in range(6):
        for j in range(6):
            # F.pairwise_distance(x1, x2, p=2) = ||x1 - x2 + 1e-6||_2
            dist = (np.linalg.norm(kp[:, i] - kp[:, j] + 1e-6, axis=-1)) ** 2
            dist = 0.1 - dist
            total += (dist * (dist > 0)).mean()
    total += np.abs(kp[:, :, -1].mean(-1) - 0.33).mean()
    got = losses.keypoint_prior_loss(jnp.asarray(kp))
    assert _scalar_f32(got) == pytest.approx(total, rel=1e-5)
    # Coincident keypoints: finite gradient (no sqrt at zero).
    g = jax.grad(losses.keypoint_prior_loss)(jnp.zeros((1, 4, 3)))
    assert np.all(np.isfinite(g))


def test_headpose_and_expression():
    logits = {k: RNG.normal(size=(2, 66)).astype(np.float32) for k in ("yaw", "pitch", "roll")}
    teacher = {k: RNG.normal(size=(2, 66)).astype(np.float32) for k in ("yaw", "pitch", "roll")}

    def deg(x):
        p = np.exp(x - x.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return (p * np.arange(66)).sum(-1) * 3 - 99

    target = {k: jnp.asarray(deg(v)) for k, v in teacher.items()}
    want = sum(np.abs(deg(logits[k]) - deg(teacher[k])).mean() for k in logits)
    assert _scalar_f32(losses.headpose_loss(logits, target)) == pytest.approx(want, rel=1e-4)
    # The teacher is a fixed target; the estimator's logits get the gradient.
    g = jax.grad(lambda t: losses.headpose_loss(logits, t))(target)
    assert all(float(jnp.abs(v).max()) == 0.0 for v in g.values())
    g = jax.grad(lambda x: losses.headpose_loss(x, target))(logits)
    assert all(float(jnp.abs(v).max()) > 0.0 for v in g.values())

    exp = RNG.normal(size=(4, 45)).astype(np.float32)
    got = losses.expression_loss(jnp.asarray(exp))
    assert _scalar_f32(got) == pytest.approx(np.abs(exp).sum(-1).mean(), rel=1e-5)


def test_head_translation_compares_x_and_y_only_and_stops_the_target_gradient():
    t = jnp.array([[0.1, -0.2, 5.0], [0.0, 0.3, -7.0]])
    target = jnp.array([[0.0, 0.0], [0.1, 0.1]])
    # (|0.1| + |-0.2| + |-0.1| + |0.2|) / 2; depth (5, -7) is free
    np.testing.assert_allclose(losses.head_translation_loss(t, target), 0.3, rtol=1e-6)
    grad = jax.grad(losses.head_translation_loss, argnums=1)(t, target)
    np.testing.assert_array_equal(grad, 0.0)


def test_landmark_keypoints_teach_keypoint_k_landmark_k_in_x_and_y_only():
    kp = jnp.array([[[0.1, -0.2, 5.0], [0.5, 0.5, 1.0], [9.0, 9.0, 9.0]]])  # K = 3
    landmarks = jnp.array([[[0.0, 0.0], [0.5, 0.0]]])  # L = 2: the third keypoint is free
    # mean over the 2 taught keypoints of |dx| + |dy|: ((0.1 + 0.2) + (0 + 0.5)) / 2
    np.testing.assert_allclose(losses.landmark_keypoint_loss(kp, landmarks), 0.4, rtol=1e-6)
    many = jnp.concatenate([landmarks, jnp.ones((1, 3, 2))], axis=1)  # L = 5 > K
    assert float(losses.landmark_keypoint_loss(kp, many)) == pytest.approx(
        (0.3 + 0.5 + 16.0) / 3, rel=1e-6)
    grad = jax.grad(losses.landmark_keypoint_loss, argnums=1)(kp, landmarks)
    np.testing.assert_array_equal(grad, 0.0)
