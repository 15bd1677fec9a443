"""Sanity checks of the independent PyTorch reference of the released AdaSR networks."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reference_torch import (  # noqa: E402
    RELEASED_MODEL_PARAMS,
    RELEASED_PARAMETER_COUNTS,
    build_reference,
    count_parameters,
    forward_reference,
    random_released_checkpoint,
    tiny_model_params,
)


@pytest.fixture(scope="module")
def released_nets():
    return build_reference(RELEASED_MODEL_PARAMS)


@pytest.mark.parametrize("name", sorted(RELEASED_PARAMETER_COUNTS))
def test_released_parameter_counts(released_nets, name):
    expected = {
        "generator": 100_988_176,
        "kp_detector": 41_940_047,
        "he_estimator": 30_254_838,
        "discriminator": 2_758_849,
    }
    assert RELEASED_PARAMETER_COUNTS == expected
    assert count_parameters(released_nets[name]) == expected[name]


def test_released_state_dict_keys(released_nets):
    keys = {name: set(net.state_dict()) for name, net in released_nets.items()}
    for key in (
        "dense_motion_network.hourglass.encoder.down_blocks.0.conv.weight",
        "dense_motion_network.hourglass.decoder.up_blocks.4.norm.running_var",
        "dense_motion_network.occlusion.weight",
        "dense_motion_network.compress.weight",
        "resblocks_3d.3dr0.conv1.weight",
        "third.conv.weight",
        "fourth.weight",
        "decoder.fc.weight",
        "decoder.G_middle_0.conv_0.weight_orig",
        "decoder.G_middle_0.conv_0.weight_u",
        "decoder.G_middle_0.conv_0.weight_v",
        "decoder.G_middle_0.norm_0.mlp_shared.0.weight",
        "decoder.up_0.conv_s.weight_orig",
        "decoder.up_1.norm_s.mlp_beta.bias",
        "decoder.conv_img.weight",
    ):
        assert key in keys["generator"], key
    assert "decoder.up_0.conv_s.bias" not in keys["generator"]
    assert "decoder.G_middle_0.conv_s.weight_orig" not in keys["generator"]
    for key in (
        "predictor.down_blocks.down0.conv.weight",
        "predictor.up_blocks.up4.norm.num_batches_tracked",
        "predictor.conv.weight",
        "kp.weight",
        "down.weight",
    ):
        assert key in keys["kp_detector"], key
    for key in ("block1.b1_0.conv1.weight", "block2.skip.weight", "block2.norm4.running_mean",
                "block7.b7_1.norm3.bias", "fc_roll.weight", "fc_exp.bias"):
        assert key in keys["he_estimator"], key
    for key in ("discs.1.down_blocks.0.conv.weight_orig", "discs.1.down_blocks.1.norm.weight",
                "discs.1.conv.weight_v"):
        assert key in keys["discriminator"], key
    assert "discs.1.down_blocks.0.norm.weight" not in keys["discriminator"]


def test_tiny_forward_and_checkpoint_roundtrip(tmp_path):
    nets = build_reference(tiny_model_params())
    path = tmp_path / "tiny.pth.tar"
    ckpt = random_released_checkpoint(nets, path, seed=3)
    assert ckpt["epoch"] == 0
    assert {"generator", "kp_detector", "he_estimator", "discriminator",
            "optimizer_generator"} <= set(ckpt)

    rng = np.random.default_rng(0)
    source = rng.uniform(size=(2, 3, 64, 64)).astype(np.float32)
    driving = rng.uniform(size=(2, 3, 64, 64)).astype(np.float32)
    out = forward_reference(nets, source, driving)
    k = tiny_model_params()["common_params"]["num_kp"]
    assert out["kp_canonical"].shape == (2, k, 3)
    assert out["kp_source"].shape == out["kp_driving"].shape == (2, k, 3)
    assert out["yaw"].shape == out["pitch"].shape == out["roll"].shape == (2,)
    assert out["t"].shape == (2, 3) and out["exp"].shape == (2, 3 * k)
    assert out["prediction"].shape == (2, 3, 64, 64)
    assert out["occlusion_map"].shape == (2, 1, 16, 16)
    assert out["mask"].shape == (2, k + 1, 4, 16, 16)
    assert out["deformation"].shape == (2, 4, 16, 16, 3)
    assert out["disc_prediction_map_1"].shape == (2, 1, 2, 2)
    for value in out.values():
        assert np.all(np.isfinite(value))
    assert out["prediction"].min() >= 0 and out["prediction"].max() <= 1
    np.testing.assert_allclose(out["mask"].sum(1), 1.0, rtol=1e-5)

    # A fresh model loaded from the saved checkpoint reproduces the outputs exactly.
    fresh = build_reference(tiny_model_params())
    loaded = torch.load(path, weights_only=False)
    for name, net in fresh.items():
        net.load_state_dict(loaded[name])
    out2 = forward_reference(fresh, source, driving)
    for key, value in out.items():
        np.testing.assert_array_equal(value, out2[key], err_msg=key)


def test_spectral_norm_eval_uses_stored_u_v(tmp_path):
    """Eval-mode weight is weight_orig / (u . W_mat v) with the stored u, v."""
    nets = build_reference(tiny_model_params())
    ckpt = random_released_checkpoint(nets, tmp_path / "t.pth.tar", seed=5)
    conv = nets["generator"].decoder.up_0.conv_0
    sd = ckpt["generator"]
    w_orig = sd["decoder.up_0.conv_0.weight_orig"]
    u = sd["decoder.up_0.conv_0.weight_u"]
    v = sd["decoder.up_0.conv_0.weight_v"]
    sigma = torch.dot(u, w_orig.reshape(w_orig.shape[0], -1) @ v)
    assert sigma > 0
    x = torch.randn(1, w_orig.shape[1], 6, 6)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(x, w_orig / sigma, conv.bias, padding=1)
        np.testing.assert_allclose(conv(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(conv.weight_u.numpy(), u.numpy())  # no power iteration
