"""Weight files from users are data: nothing in them runs, and bad ones are one line."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from asrth_jax import convert  # noqa: E402
from asrth_jax.models import hopenet, vgg  # noqa: E402
from asrth_jax.torch_files import TorchFileError, read_torch_file  # noqa: E402

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


class _Payload:
    """Unpickling this calls os.system, which creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(kind: str, path: Path, marker: Path) -> Path:
    """A file in the released layout whose generator entry runs a shell command."""
    obj = {"generator": _Payload(marker), "kp_detector": {}, "he_estimator": {}}
    if kind == "pickle":  # a plain pickle stream (protocol 2 reaches GLOBAL at once)
        path.write_bytes(pickle.dumps(obj, protocol=2))
    elif kind == "pickle4":
        path.write_bytes(pickle.dumps(obj, protocol=4))
    elif kind == "zip":
        torch.save(obj, path)
    else:  # torch's legacy (pre-1.6) non-zip layout
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> str:
    pytest.importorskip("reference_torch")
    from test_inference import tiny_config_file

    return str(tiny_config_file(tmp_path_factory.mktemp("cfg") / "tiny.py"))


@pytest.mark.parametrize("kind", ["pickle", "zip"])
def test_convert_cli_refuses_code_in_checkpoint(kind, tiny_config, tmp_path, jax_env):
    marker = tmp_path / "MARKER"
    evil = _evil(kind, tmp_path / "evil.pth", marker)
    result = subprocess.run(
        [sys.executable, "-m", "asrth_jax.convert", "--torch-checkpoint", str(evil),
         "--config", tiny_config, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=jax_env, timeout=300)
    assert not marker.exists()
    line = _one_line_error(result)
    assert str(evil) in line and "refusing" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (REAL / "529_2.mp4").exists(), reason="real clips not available")
def test_animate_cli_refuses_code_in_checkpoint(tiny_config, tmp_path, jax_env):
    # animate reads through convert.load_torch_file, refused above for every layout.
    marker = tmp_path / "MARKER"
    evil = _evil("zip", tmp_path / "evil.pth.tar", marker)
    result = subprocess.run(
        [sys.executable, "-m", "asrth_jax.animate", "--torch-checkpoint", str(evil),
         "--config", tiny_config, "--source", str(REAL / "demo_img_1.jpg"),
         "--driving", str(REAL / "529_2.mp4"), "--out", str(tmp_path / "a.mp4"),
         "--max-frames", "2", "--quiet"],
        capture_output=True, text=True, env=jax_env, timeout=300)
    assert not marker.exists()
    line = _one_line_error(result)
    assert str(evil) in line and "refusing" in line
    assert not (tmp_path / "a.mp4").exists()


@pytest.mark.parametrize("kind", ["pickle", "pickle4", "zip", "legacy"])
def test_every_layout_refused_before_the_payload_runs(kind, tmp_path):
    marker = tmp_path / "MARKER"
    evil = _evil(kind, tmp_path / "evil.pth", marker)
    for read in (read_torch_file, vgg.load_torch_state_dict):
        with pytest.raises(TorchFileError, match="refusing to load") as info:
            read(evil)
        assert "\n" not in str(info.value) and str(evil) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_released_layout_with_optimizer_state_loads(legacy, tmp_path):
    """Tensors, numbers, strings, tuples, None and nested dicts: all a release holds."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    net(torch.ones(2, 3, 5, 5)).sum().backward()
    opt.step()  # the optimizer state now holds step counters and moment tensors
    saved = {"generator": net.state_dict(), "optimizer_generator": opt.state_dict(),
             "epoch": 7, "note": "mix-train"}
    path = tmp_path / "mix-train.pth.tar"
    torch.save(saved, path, _use_new_zipfile_serialization=not legacy)
    loaded = convert.load_torch_file(str(path))
    assert loaded["epoch"] == 7 and loaded["note"] == "mix-train"
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(loaded["generator"][key], value.numpy())
    group = loaded["optimizer_generator"]["param_groups"][0]
    assert group["betas"] == (0.5, 0.999)
    moments = loaded["optimizer_generator"]["state"][0]["exp_avg"]
    assert isinstance(moments, np.ndarray) and moments.shape == (4, 3, 3, 3)


def _garbage_files(tmp_path: Path) -> dict[str, Path]:
    files = {"random bytes": tmp_path / "random.pth", "text": tmp_path / "notes.pth",
             "empty": tmp_path / "empty.pth", "truncated zip": tmp_path / "cut.pth"}
    files["random bytes"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["text"].write_text("these are not weights\n" * 20)
    files["empty"].write_bytes(b"")
    torch.save({"w": torch.ones(100)}, files["truncated zip"])
    data = files["truncated zip"].read_bytes()
    files["truncated zip"].write_bytes(data[: len(data) // 2])
    files["missing"] = tmp_path / "missing.pth"
    files["a directory"] = tmp_path
    return files


@pytest.mark.parametrize("flag", ["--vgg19", "--hopenet", "--torch-checkpoint"])
def test_unreadable_weight_files_are_one_line(flag, tiny_config, tmp_path, capsys):
    extra = ["--config", tiny_config] if flag == "--torch-checkpoint" else []
    for what, path in _garbage_files(tmp_path).items():
        with pytest.raises(SystemExit) as info:
            convert.main([flag, str(path), "--out", str(tmp_path / "out.npz"), *extra])
        message = str(info.value.code)
        assert message.startswith("error: ") and "\n" not in message, (what, message)
        assert str(path) in message, (what, message)
        assert capsys.readouterr().err == "", what  # no torch warning on top of the line


def test_state_dict_with_non_array_values_is_one_line(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"features.0.weight": "a string", "features.0.bias": torch.zeros(64)}, path)
    for converter in (vgg.convert_vgg19_file, hopenet.convert_hopenet_file):
        with pytest.raises(ValueError, match="features.0.weight is a str, not a weight array"):
            converter(path, tmp_path / "out.npz")
    with pytest.raises(SystemExit) as info:
        convert.main(["--vgg19", str(path), "--out", str(tmp_path / "o.npz")])
    assert "not a weight array" in str(info.value.code)
    assert "\n" not in str(info.value.code)


@pytest.mark.parametrize("entry", ["a string", 3, [1, 2]])
def test_network_entry_that_is_not_a_state_dict_is_one_line(entry, tiny_config, tmp_path):
    path = tmp_path / "bad.pth.tar"
    torch.save({"generator": entry, "kp_detector": {}, "he_estimator": {}}, path)
    with pytest.raises(SystemExit) as info:
        convert.main(["--torch-checkpoint", str(path), "--config", tiny_config, "--out",
                      str(tmp_path / "out")])
    message = str(info.value.code)
    assert "\n" not in message and str(path) in message
    assert f"generator is a {type(entry).__name__}" in message
    with pytest.raises(convert.ConversionError, match="not a dict"):
        convert.convert_released_checkpoint([entry], None, None)


def test_unreadable_npz_weights_are_one_line(tmp_path):
    bad = {"text.npz": b"not a zip", "empty.npz": b""}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    np.savez(tmp_path / "objects.npz", w=np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "single.npy", np.zeros(3))
    for name in [*bad, "objects.npz", "single.npy"]:
        for load in (vgg.load_vgg19_npz, hopenet.load_hopenet_npz):
            with pytest.raises(ValueError, match="cannot read weights") as info:
                load(tmp_path / name)
            assert "\n" not in str(info.value) and name in str(info.value)
