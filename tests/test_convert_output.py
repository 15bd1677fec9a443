"""`convert --torch-checkpoint --out DIR` never writes over a user's files silently."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from asrth_jax import checkpoints, convert


def _flat(*modules: nnx.Module) -> dict:
    return {(i, p): np.asarray(v.get_value()) for i, m in enumerate(modules)
            for p, v in nnx.to_flat_state(nnx.state(m))}


def _shift(module: nnx.Module, delta: float) -> None:
    state = nnx.state(module)
    nnx.update(module, jax.tree.map(lambda x: x + delta, state))


def _refusal(tmp_path, out, *extra: str) -> str:
    # --out is checked before the release file or the config is even opened.
    with pytest.raises(SystemExit) as info:
        convert.main(["--torch-checkpoint", str(tmp_path / "unread.pth"), "--config",
                      str(tmp_path / "unread.py"), "--out", str(out), *extra])
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_later_step_in_out_is_refused_then_really_replaced(tmp_path):
    """Orbax skips saving step 0 beside a later step; convert must not report success."""
    out = tmp_path / "ckpt"
    # Small stand-ins: writing and replacing do not depend on what the networks are.
    gen = nnx.Sequential(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)),
                         nnx.BatchNorm(4, rngs=nnx.Rngs(1)))
    disc = nnx.Linear(4, 1, rngs=nnx.Rngs(2))
    checkpoints.save_models(str(out), gen, disc, step=5)

    message = _refusal(tmp_path, out)
    assert "--overwrite" in message and str(out) in message
    assert sorted(p.name for p in out.iterdir()) == ["5"]

    _shift(gen, 1.0)  # the "converted" weights: different from what step 5 holds
    _shift(disc, 1.0)
    new = _flat(gen, disc)
    assert convert.write_checkpoint(str(out), gen, disc) == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["0"]
    assert not list(tmp_path.glob("ckpt.*"))  # no temporary sibling left behind
    _shift(gen, -5.0)
    _shift(disc, -5.0)
    assert checkpoints.restore_models(str(out), gen, disc) == 0
    got = _flat(gen, disc)
    assert got.keys() == new.keys()
    for key in new:
        np.testing.assert_array_equal(got[key], new[key], err_msg=str(key))


def test_overwrite_replaces_only_a_checkpoint_directory(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert "--overwrite" in _refusal(tmp_path, out)
    assert "notes.txt" in _refusal(tmp_path, out, "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"

    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in _refusal(tmp_path, a_file, "--overwrite")
    assert a_file.read_text() == "x"
