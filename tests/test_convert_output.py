"""`convert --torch-checkpoint --out DIR` never writes over a user's files silently."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

ref = pytest.importorskip("reference_torch")

from test_inference import random_models, tiny_config_file, tiny_model_config  # noqa: E402

from asrth_jax import checkpoints, convert  # noqa: E402


def _flat(module: nnx.Module) -> dict:
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(module))}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    pth = root / "mix-train.pth.tar"
    ref.random_released_checkpoint(ref.build_reference(ref.tiny_model_params()), str(pth),
                                   seed=3)
    gen, disc = random_models(tiny_model_config(), seed=20)
    convert.convert_released_checkpoint(convert.load_torch_file(str(pth)), gen, disc)
    return {"pth": str(pth), "config": str(tiny_config_file(root / "tiny.py")),
            "gen": gen, "disc": disc}


def _convert(release, out, *extra: str) -> int:
    return convert.main(["--torch-checkpoint", release["pth"], "--config", release["config"],
                         "--out", str(out), *extra])


def test_later_step_in_out_is_refused_then_really_replaced(release, tmp_path):
    """Orbax skips saving step 0 beside a later step; convert must not report success."""
    out = tmp_path / "ckpt"
    old_gen, old_disc = random_models(tiny_model_config(), seed=7)
    checkpoints.save_models(str(out), old_gen, old_disc, step=5)

    with pytest.raises(SystemExit) as info:
        _convert(release, out)
    message = str(info.value.code)
    assert "\n" not in message and "--overwrite" in message and str(out) in message
    assert sorted(p.name for p in out.iterdir()) == ["5"]

    assert _convert(release, out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["0"]
    assert not list(tmp_path.glob("ckpt.*"))  # no temporary sibling left behind
    gen, disc = random_models(tiny_model_config(), seed=11)
    assert checkpoints.restore_models(str(out), gen, disc) == 0
    for got, want in ((gen, release["gen"]), (disc, release["disc"])):
        got, want = _flat(got), _flat(want)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))


def test_overwrite_replaces_only_a_checkpoint_directory(release, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for extra in ((), ("--overwrite",)):
        with pytest.raises(SystemExit) as info:
            _convert(release, out, *extra)
        assert "\n" not in str(info.value.code) and "notes.txt" in str(info.value.code)
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(SystemExit, match="is a file"):
        _convert(release, a_file, "--overwrite")
    assert a_file.read_text() == "x"
