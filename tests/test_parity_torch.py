"""Converted release-format weights reproduce the PyTorch reference (eval, float32)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import reference_torch as ref  # noqa: E402
from flax import nnx  # noqa: E402

from asrth_jax import checkpoints, config_lib, convert  # noqa: E402
from asrth_jax.models import adasr  # noqa: E402
from asrth_jax.models.head_pose import bins_to_degrees, transform_keypoints  # noqa: E402


def tiny_config_from_reference(params: dict):
    """Our model config equal to the reference's tiny `model_params`."""
    common, kp, he = params["common_params"], params["kp_detector_params"], \
        params["he_estimator_params"]
    gen, disc = params["generator_params"], params["discriminator_params"]
    dec = gen["decoder_params"]
    assert dec["ic"] == dec["label_nc"] == gen["block_expansion"] * 2 ** gen["num_down_blocks"]
    return config_lib.model_config({
        "common": {"num_kp": common["num_kp"], "feature_channel": common["feature_channel"]},
        "kp_detector": {k: kp[k] for k in ("block_expansion", "max_features", "scale_factor",
                                           "num_blocks", "reshape_channel", "reshape_depth")},
        "he_estimator": {"block_expansion": he["block_expansion"],
                         "stage_features": tuple(he["stage_features"])},
        "generator": {
            **{k: gen[k] for k in ("block_expansion", "max_features", "num_down_blocks",
                                   "reshape_channel", "reshape_depth", "num_resblocks")},
            "decoder_out_features": dec["oc"], "decoder_hidden": dec["spade_hidden"],
            "dense_motion": dict(gen["dense_motion_params"]),
        },
        "discriminator": {k: disc[k] for k in ("block_expansion", "max_features",
                                               "num_blocks")},
    })


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    params = ref.tiny_model_params()
    nets = ref.build_reference(params)
    path = tmp_path_factory.mktemp("torch") / "mix-train.pth.tar"
    ref.random_released_checkpoint(nets, str(path), seed=3)
    cfg = tiny_config_from_reference(params)
    gen_side = adasr.build_generator(cfg)
    disc = adasr.build_discriminator(cfg)
    convert.convert_released_checkpoint(convert.load_torch_file(str(path)), gen_side, disc)
    gen_side.eval()
    disc.eval()
    rng = np.random.default_rng(0)
    source = rng.uniform(size=(2, 3, 64, 64)).astype(np.float32)
    driving = rng.uniform(size=(2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = ref.forward_reference(nets, source, driving)
    return dict(nets=nets, path=path, cfg=cfg, gen=gen_side, disc=disc, source=source,
                driving=driving, expected=expected)


def nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def test_keypoints_pose_and_pixels_match(converted):
    c = converted
    exp = c["expected"]

    @nnx.jit
    def forward(gen, disc, source, driving):
        out = gen(source, driving)
        out["degrees"] = {k: bins_to_degrees(out["he_driving"][k])
                          for k in ("yaw", "pitch", "roll")}
        out["disc"] = disc(out["prediction"])
        return out

    out = jax.device_get(forward(c["gen"], c["disc"], nhwc(c["source"]), nhwc(c["driving"])))
    np.testing.assert_allclose(out["kp_canonical"], exp["kp_canonical"], atol=1e-4)
    for name in ("yaw", "pitch", "roll"):
        np.testing.assert_allclose(out["degrees"][name], exp[name], atol=1e-4)
    np.testing.assert_allclose(out["he_driving"]["t"], exp["t"], atol=1e-4)
    np.testing.assert_allclose(out["he_driving"]["exp"], exp["exp"], atol=1e-4)
    np.testing.assert_allclose(out["kp_source"], exp["kp_source"], atol=1e-4)
    np.testing.assert_allclose(out["kp_driving"], exp["kp_driving"], atol=1e-4)
    np.testing.assert_allclose(out["deformation"], exp["deformation"], atol=1e-4)
    np.testing.assert_allclose(out["occlusion_map"], nhwc(exp["occlusion_map"]), atol=1e-4)
    np.testing.assert_allclose(out["prediction"], nhwc(exp["prediction"]), atol=1e-3)
    np.testing.assert_allclose(out["disc"]["prediction_maps"][0],
                               nhwc(exp["disc_prediction_map_1"]), atol=1e-3)


def test_free_view_rotation_matches_reference(converted):
    kp = np.random.default_rng(1).normal(size=(2, 4, 3)).astype(np.float32)
    he = {k: np.random.default_rng(2).normal(size=(2, 66)).astype(np.float32)
          for k in ("yaw", "pitch", "roll")}
    he["t"] = np.zeros((2, 3), np.float32)
    he["exp"] = np.zeros((2, 12), np.float32)
    ours = transform_keypoints(kp, he, yaw=30.0, pitch=-10.0, roll=5.0)
    rot = ref.get_rotation_matrix(torch.tensor([30.0, 30.0]), torch.tensor([-10.0, -10.0]),
                                  torch.tensor([5.0, 5.0])).numpy()
    np.testing.assert_allclose(ours, np.einsum("bmp,bkp->bkm", rot, kp), atol=1e-5)


def test_cli_writes_orbax_checkpoint_that_restores(converted, tmp_path):
    c = converted
    config_file = tmp_path / "tiny.py"
    config_file.write_text(
        "from asrth_jax import config_lib\n"
        f"MODEL = {c['cfg'].to_dict()!r}\n"
        "def get_config():\n"
        "    c = config_lib.base_config()\n"
        "    c.image_size = 64\n"
        "    c.model = config_lib.model_config(MODEL)\n"
        "    return config_lib.finalize(c)\n")
    out = tmp_path / "ckpt"
    assert convert.main(["--torch-checkpoint", str(c["path"]), "--config", str(config_file),
                         "--out", str(out)]) == 0
    fresh = adasr.build_generator(c["cfg"], seed=9)
    checkpoints.restore_models(str(out), fresh)
    restored = nnx.to_flat_state(nnx.state(fresh))
    original = nnx.to_flat_state(nnx.state(c["gen"]))
    for (p, a), (_, b) in zip(restored, original, strict=True):
        np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()),
                                      err_msg=str(p))
    # An existing output is never overwritten without --overwrite.
    with pytest.raises(SystemExit, match="overwrite"):
        convert.main(["--torch-checkpoint", str(c["path"]), "--config", str(config_file),
                      "--out", str(out)])


def test_mismatches_are_reported_together(converted):
    sd = {k: v.detach().numpy() for k, v in c_state(converted).items()}
    sd["bogus.weight"] = np.zeros((3,), np.float32)
    del sd["kp.bias"]
    sd["kp.weight"] = np.zeros((1, 1, 1, 1, 1), np.float32)
    module = adasr.build_generator(converted["cfg"]).kp_detector
    with pytest.raises(convert.ConversionError) as info:
        convert.convert_state_dict("kp_detector", sd, module)
    message = str(info.value)
    assert "unknown key bogus.weight" in message
    assert "shape mismatch for kp.weight" in message
    assert "missing key for kp/bias" in message


def c_state(converted):
    return converted["nets"]["kp_detector"].state_dict()
