"""Model structure and the numerics that decide parity with the released checkpoint."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_helpers import write_misspelt_config

from asrth_jax import config_lib
from asrth_jax.models import adasr, blocks
from asrth_jax.models.head_pose import bins_to_degrees, rotation_matrix
from asrth_jax.models.warp import (
    grid_sample_2d,
    grid_sample_3d,
    make_coordinate_grid_2d,
    make_coordinate_grid_3d,
)

RELEASED_COUNTS = {"generator": 100_988_176, "kp_detector": 41_940_047,
                   "he_estimator": 30_254_838, "discriminator": 2_758_849}


def test_parameter_counts_equal_the_release():
    cfg = config_lib.model_config()
    gen = adasr.abstract_generator(cfg)
    disc = adasr.abstract_discriminator(cfg)
    counts = {n: adasr.count_params(getattr(gen, n)) for n in
              ("generator", "kp_detector", "he_estimator")}
    counts["discriminator"] = adasr.count_params(disc)
    assert counts == RELEASED_COUNTS


def _numpy_grid_sample(volume: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Plain loop: trilinear, align_corners=False, zero padding (torch semantics)."""
    d, h, w, c = volume.shape
    out = np.zeros(grid.shape[:-1] + (c,))
    for idx in np.ndindex(grid.shape[:-1]):
        x, y, z = grid[idx]
        px, py, pz = ((x + 1) * w - 1) / 2, ((y + 1) * h - 1) / 2, ((z + 1) * d - 1) / 2
        x0, y0, z0 = int(np.floor(px)), int(np.floor(py)), int(np.floor(pz))
        for dz, dy, dx in itertools.product((0, 1), repeat=3):
            xi, yi, zi = x0 + dx, y0 + dy, z0 + dz
            weight = ((px - x0) if dx else (1 - (px - x0))) * \
                     ((py - y0) if dy else (1 - (py - y0))) * \
                     ((pz - z0) if dz else (1 - (pz - z0)))
            if 0 <= xi < w and 0 <= yi < h and 0 <= zi < d:
                out[idx] += weight * volume[zi, yi, xi]
    return out


def test_trilinear_sampler_matches_plain_loop_including_outside_taps():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(3, 4, 5, 2)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, size=(2, 3, 4, 3)).astype(np.float32)
    expected = _numpy_grid_sample(volume, grid)
    np.testing.assert_allclose(grid_sample_3d(volume, grid), expected, atol=1e-5)


def test_bilinear_sampler_matches_torch_grid_sample():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    image = rng.normal(size=(6, 7, 3)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, size=(5, 4, 2)).astype(np.float32)
    expected = torch.nn.functional.grid_sample(
        torch.from_numpy(image).permute(2, 0, 1)[None], torch.from_numpy(grid)[None],
        mode="bilinear", padding_mode="zeros", align_corners=False)[0].permute(1, 2, 0)
    np.testing.assert_allclose(grid_sample_2d(image, grid), expected.numpy(), atol=1e-5)


def test_identity_grid_reproduces_the_volume():
    volume = np.random.default_rng(2).normal(size=(4, 5, 6, 3)).astype(np.float32)
    # align_corners=False: the [-1, 1]-inclusive grid is NOT the identity, except at centre.
    sampled = grid_sample_3d(volume, make_coordinate_grid_3d(4, 5, 6))
    assert not np.allclose(sampled, volume)
    centres = [(2 * np.arange(n) + 1) / n - 1 for n in (6, 5, 4)]
    zz, yy, xx = np.meshgrid(centres[2], centres[1], centres[0], indexing="ij")
    exact = np.stack([xx, yy, zz], -1).astype(np.float32)
    np.testing.assert_allclose(grid_sample_3d(volume, exact), volume, atol=1e-5)


def test_coordinate_grids_span_minus_one_to_one_with_x_along_width():
    g2 = np.asarray(make_coordinate_grid_2d(3, 5))
    assert g2.shape == (3, 5, 2)
    np.testing.assert_allclose(g2[0, :, 0], np.linspace(-1, 1, 5), atol=1e-6)
    np.testing.assert_allclose(g2[:, 0, 1], np.linspace(-1, 1, 3), atol=1e-6)
    g3 = np.asarray(make_coordinate_grid_3d(2, 3, 4))
    np.testing.assert_allclose(g3[:, 0, 0, 2], [-1, 1])
    np.testing.assert_allclose(g3[0, 0, :, 0], np.linspace(-1, 1, 4), atol=1e-6)


def test_rotation_is_pitch_then_yaw_then_roll_with_reference_constant():
    yaw, pitch, roll = np.float32(30.0), np.float32(-20.0), np.float32(10.0)
    y, p, r = (a / 180 * 3.14 for a in (yaw, pitch, roll))
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    ours = rotation_matrix(jnp.array([yaw]), jnp.array([pitch]), jnp.array([roll]))[0]
    np.testing.assert_allclose(ours, rx @ ry @ rz, atol=1e-6)


def test_bins_to_degrees_is_softmax_expectation():
    logits = np.full((1, 66), -1e9, np.float32)
    logits[0, 40] = 0.0
    np.testing.assert_allclose(bins_to_degrees(logits), [40 * 3 - 99])


def test_nearest_upsampling_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).normal(size=(1, 3, 4, 2)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2),
                                               scale_factor=2).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(blocks.upsample_nearest(x), expected)


def test_spectral_norm_eval_uses_stored_vectors_like_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(3, 5, 3, padding=1))
    conv.train()
    conv(torch.randn(1, 3, 8, 8))  # one power iteration so u, v are meaningful
    conv.eval()
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype(np.float32)
    with torch.no_grad():
        expected = conv(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    ours = blocks.SpectralConv2d(3, 5, 3, padding=1, rngs=nnx.Rngs(0))
    sd = {k: v.detach().numpy() for k, v in conv.state_dict().items()}
    from asrth_jax.convert import _spectral_v_to_ours

    ours.kernel[...] = sd["weight_orig"].transpose(2, 3, 1, 0)
    ours.bias[...] = sd["bias"]
    ours.u[...] = sd["weight_u"]
    ours.v[...] = _spectral_v_to_ours(sd["weight_v"], sd["weight_orig"])
    ours.eval()
    np.testing.assert_allclose(ours(x), expected, atol=1e-5)
    # Train mode advances the power iteration and stores the new vectors.
    ours.train()
    before = np.asarray(ours.u[...]).copy()
    ours(x)
    assert not np.allclose(before, ours.u[...])


def test_wrong_image_size_is_one_clear_error():
    cfg = config_lib.model_config()
    with pytest.raises(ValueError, match="not a multiple of 128"):
        adasr.validate_image_shape(cfg, (1, 500, 500, 3))
    with pytest.raises(ValueError, match="expected images of shape"):
        adasr.validate_image_shape(cfg, (1, 512, 512, 4))


def test_misspelt_key_in_a_config_file_is_one_line(tmp_path):
    bad = write_misspelt_config(tmp_path)
    with pytest.raises(config_lib.ConfigError, match="nun_steps"):
        config_lib.load_config_file(str(bad))
    with pytest.raises(KeyError, match="unknown config key"):
        config_lib.model_config({"generator": {"num_resblockz": 2}})


def test_3d_convolution_as_2d_sums_matches_xla():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 7, 3)).astype(np.float32)
    for k, pad in ((3, 1), (1, 0), (7, 3)):
        w = rng.standard_normal((k, k, k, 3, 4)).astype(np.float32)
        padding = [(pad, pad)] * 3
        want = jax.lax.conv_general_dilated(x, w, (1, 1, 1), padding,
                                            dimension_numbers=blocks._DN_3D)
        got = blocks._conv3d_as_2d(x, w, (1, 1, 1), padding, dimension_numbers=blocks._DN_3D)
        np.testing.assert_allclose(got, want, atol=1e-4)
    # Strided: falls back to XLA's 3D convolution.
    got = blocks._conv3d_as_2d(x, w, (1, 2, 2), [(3, 3)] * 3, dimension_numbers=blocks._DN_3D)
    assert got.shape == (2, 5, 3, 4, 4)
    # The model's 3D layers use the dispatching convolution.
    layer = blocks.conv(3, 4, 3, padding=1, ndim=3, rngs=nnx.Rngs(0))
    assert layer.conv_general_dilated is blocks.conv3d


@pytest.mark.parametrize("ndim, factors, kernel, pad", [
    (2, (4, 4), 3, 1),  # the decoder's last SPADE block
    (2, (2, 2), 3, 1),  # UpBlock2d
    pytest.param(3, (1, 2, 2), 3, 1, marks=pytest.mark.slow),  # UpBlock3d: (H, W) only
    pytest.param(2, (2, 2), 5, 2, marks=pytest.mark.slow),
    (2, (2, 3), 1, 0),
])
def test_convolution_of_an_upsampled_input_matches_upsample_then_convolve(
        ndim, factors, kernel, pad):
    layer = blocks.conv(3, 4, kernel, padding=pad, ndim=ndim, rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.arange(4.0)  # zero at init: make the bias count
    spatial = (3, 5, 4)[:ndim]
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, *spatial, 3)), jnp.float32)

    def reference(x, layer):
        for axis, factor in enumerate(factors):
            x = jnp.repeat(x, factor, axis=axis + 1)
        return layer(x)

    want = reference(x, layer)
    got = blocks.conv_of_upsampled(layer, x, factors)
    upsampled = tuple(n * f for n, f in zip(spatial, factors, strict=True))
    assert got.shape == want.shape == (2, *upsampled, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Same gradients with respect to the input and the kernel (training uses this path).
    cotangent = jnp.asarray(np.random.default_rng(2).standard_normal(want.shape), jnp.float32)
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * cotangent), argnums=(0, 1))(
        x, layer.kernel[...]) for f in (
            lambda x, k: _with_kernel(layer, k, lambda m: reference(x, m)),
            lambda x, k: _with_kernel(layer, k, lambda m: blocks.conv_of_upsampled(m, x, factors)))]
    for want_grad, got_grad in zip(*grads, strict=True):
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-4)


def _with_kernel(layer: nnx.Conv, kernel: jax.Array, fn):
    graphdef, state = nnx.split(layer)
    clone = nnx.merge(graphdef, state)
    clone.kernel = nnx.Param(kernel)
    return fn(clone)


def test_convolution_of_an_upsampled_input_keeps_dtype_and_falls_back_when_strided():
    x = jnp.ones((1, 4, 4, 3), jnp.bfloat16)
    layer = blocks.conv(3, 4, 3, padding=1, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    assert blocks.conv_of_upsampled(layer, x, (2, 2)).dtype == jnp.bfloat16
    strided = blocks.conv(3, 4, 3, padding=1, stride=2, rngs=nnx.Rngs(0))
    got = blocks.conv_of_upsampled(strided, x.astype(jnp.float32), (2, 2))
    np.testing.assert_allclose(got, strided(blocks.upsample_nearest(x.astype(jnp.float32))),
                               rtol=1e-6)


@pytest.mark.parametrize("num_down_blocks", [1, 3])
def test_generator_depth_sets_the_volume_scale_and_the_decoder_undoes_it(num_down_blocks):
    """The release has 2 down blocks (a H/4 volume); other depths get as many 2x
    upsampling SPADE blocks, so the frame comes back at full size. Traced abstractly:
    every layer's shapes are checked without the CPU cost of running it."""
    from asrth_jax.models.generator import OcclusionAwareSPADEGenerator

    gen = nnx.eval_shape(lambda: OcclusionAwareSPADEGenerator(
        image_channel=3, feature_channel=4, num_kp=3, block_expansion=4, max_features=16,
        num_down_blocks=num_down_blocks, reshape_channel=4, reshape_depth=4, num_resblocks=1,
        estimate_occlusion_map=True, decoder_out_features=4, decoder_hidden=4,
        decoder_middle_blocks=1,
        dense_motion_params=dict(block_expansion=4, max_features=16, num_blocks=1,
                                 reshape_depth=4, compress=1),
        rngs=nnx.Rngs(0)))
    assert [name for name in vars(gen.decoder) if name.startswith("up_")] == \
        [f"up_{i}" for i in range(num_down_blocks)]
    graphdef, state = nnx.split(gen)

    def run(state, image, kp):
        model = nnx.merge(graphdef, state)
        volume = model.encode_source(image)
        return volume, model.decode(volume, kp, kp * 0.9)["prediction"]

    size = 32
    volume, prediction = jax.eval_shape(run, state, jax.ShapeDtypeStruct((2, size, size, 3),
                                                                         jnp.float32),
                                        jax.ShapeDtypeStruct((2, 3, 3), jnp.float32))
    assert volume.shape == (2, 4, size // 2**num_down_blocks, size // 2**num_down_blocks, 4)
    assert prediction.shape == (2, size, size, 3)


def test_batch_norm_averages_its_statistics_with_the_given_reduction():
    """Per-device steps hand BatchNorm a cross-device mean: with the identity (one device)
    it is Flax's training-mode BatchNorm, and the statistics it normalises by are the
    reduction's output."""
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 6)) * 2.0 + 1.0

    def make():
        norm = blocks.batch_norm(6, rngs=nnx.Rngs(0))
        norm.scale[...] = jnp.linspace(0.5, 1.5, 6)
        norm.bias[...] = jnp.linspace(-1.0, 1.0, 6)
        return norm

    flax_norm, ours = make(), make()
    expected = flax_norm(x)
    blocks.set_statistics_mean(ours, lambda stats: stats)
    got = ours(x)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(ours.mean[...], flax_norm.mean[...], atol=1e-6)
    np.testing.assert_allclose(ours.var[...], flax_norm.var[...], rtol=1e-5)

    # Statistics of another batch (e.g. the other devices'): mean 0.5, variance 9.
    given = make()
    blocks.set_statistics_mean(given,
                               lambda _: jnp.stack([jnp.full(6, 0.5), jnp.full(6, 9.25)]))
    got = given(x)
    np.testing.assert_allclose(got, (x - 0.5) / jnp.sqrt(9.0 + blocks.NORM_EPSILON)
                               * given.scale[...] + given.bias[...], atol=1e-5)

    def no_reduction(stats):
        raise AssertionError("eval mode reads the running statistics")

    given.eval()
    blocks.set_statistics_mean(given, no_reduction)
    given(x)


def _he_estimator(norm: str) -> nnx.Module:
    from asrth_jax.models.head_pose import HEEstimator

    return HEEstimator(block_expansion=8, num_kp=2, image_channel=3,
                       stage_features=(16, 16, 16, 16), stage_blocks=(1, 1, 1, 1),
                       norm=blocks.norm_layer(norm), rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_group_norm_head_pose_estimator_reads_each_example_alone():
    # The point of `norm="group"`: in training mode an example's pose does not depend
    # on which other examples share its batch (BatchNorm's does).
    images = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    others = jax.random.uniform(jax.random.key(1), (3, 32, 32, 3))
    for norm, independent in (("group", True), ("batch", False)):
        he = _he_estimator(norm)
        he.fc_t.kernel[...] = jax.random.normal(jax.random.key(2), he.fc_t.kernel.shape)
        he.train()
        alone = he(images)["t"][0]
        mixed = he(jnp.concatenate([images[:1], others]))["t"][0]
        assert np.allclose(alone, mixed, atol=1e-5) == independent, norm
    assert any(isinstance(m, nnx.GroupNorm) for _, m in nnx.iter_graph(_he_estimator("group")))
    assert not any(isinstance(m, nnx.BatchNorm)
                   for _, m in nnx.iter_graph(_he_estimator("group")))


def test_unknown_norm_layer_is_one_config_error():
    from asrth_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="model.he_estimator.norm='layer'.*batch, group"):
        blocks.norm_layer("layer")
    assert config_lib.model_config().he_estimator.norm == "batch"


def test_abstract_modules_are_the_plainly_constructed_ones():
    """`abstract_generator`/`abstract_discriminator` (what restore, convert and the
    train step's structure use) trace with `traceable_rngs`: the same graph, shapes and
    dtypes as constructing the modules with plain `nnx.Rngs`."""
    from train_helpers import TINY

    cfg = config_lib.load_config_file(TINY).model
    plain_disc = nnx.eval_shape(lambda: adasr.MultiScaleDiscriminator(
        num_channels=3, rngs=nnx.Rngs(0),
        **{**cfg.discriminator, "scales": tuple(cfg.discriminator.scales)}))
    pairs = ((adasr.abstract_generator(cfg, dtype="bfloat16", remat=True),
              nnx.eval_shape(lambda: adasr.AdaSRGenerator(cfg, rngs=nnx.Rngs(0),
                                                          dtype="bfloat16", remat=True))),
             (adasr.abstract_discriminator(cfg), plain_disc))
    for abstract, plain in pairs:
        abstract_def, abstract_state = nnx.split(abstract)
        plain_def, plain_state = nnx.split(plain)
        assert abstract_def == plain_def
        assert all(isinstance(leaf, jax.ShapeDtypeStruct)
                   for leaf in jax.tree.leaves(abstract_state))
        assert _shapes(abstract_state) == _shapes(plain_state)


def _shapes(state: nnx.State) -> nnx.State:
    return jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), state)
