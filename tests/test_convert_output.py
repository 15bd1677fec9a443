"""`convert --torch-checkpoint --out DIR` never writes over a user's files silently."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from disk_helpers import small_tmpfs
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


# ------------------------------------------------------------ issue 28: nothing lost
def _save_training_like_steps(out, steps=(2, 3)) -> None:
    """Step folders as `TrainCheckpointer` writes them: models, optimizer, meta, data."""
    import orbax.checkpoint as ocp

    items = ("models", "optimizer", "meta")
    with ocp.CheckpointManager(str(out), item_names=items) as manager:
        for step in steps:
            manager.save(step, args=ocp.args.Composite(**{
                item: ocp.args.StandardSave({"x": np.full((3,), step, np.float32)})
                for item in items}))
        manager.wait_until_finished()
    for step in steps:  # the Grain iterator's position, a plain JSON item
        (out / str(step) / "data").mkdir()
        (out / str(step) / "data" / "process_0-of-1.json").write_text('{"next_index": 1}')


def test_a_training_runs_steps_are_never_replaced_by_a_conversion(tmp_path):
    """Must-show: `--out RUN/checkpoints --overwrite` is refused in one line and every
    step (optimizer and data state included) stays; the library writer refuses too."""
    run = tmp_path / "run" / "checkpoints"
    _save_training_like_steps(run)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    message = _refusal(tmp_path, run, "--overwrite")
    assert "training step(s) 2, 3" in message and "choose another --out" in message
    gen = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    disc = nnx.Linear(2, 1, rngs=nnx.Rngs(1))
    with pytest.raises(convert.OutputError, match="training step"):
        convert.write_checkpoint(str(run), gen, disc)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before
    assert not list((tmp_path / "run").glob("checkpoints.*"))


@pytest.fixture(scope="module")
def vgg19_pth(tmp_path_factory):
    """A torchvision-layout VGG19 `features` file (random weights, ~80 MB)."""
    torch = pytest.importorskip("torch")
    from asrth_jax.models import vgg

    rng = np.random.default_rng(0)
    state, in_ch, index = {}, 3, 0
    for item in vgg.VGG19_CFG:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.from_numpy(
            rng.standard_normal((item, in_ch, 3, 3), dtype=np.float32))
        state[f"features.{index}.bias"] = torch.zeros(item)
        in_ch, index = item, index + 2
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return path


def _convert_argv(source, out, *extra):
    return ["--vgg19", str(source), "--out", str(out), *extra]


def test_a_kill_during_vgg19_overwrite_leaves_the_old_file(tmp_path, vgg19_pth):
    """Must-show: SIGKILL while `convert --vgg19 --overwrite` writes leaves the previous
    file byte for byte (the new one is written beside and swapped in when whole)."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "weights" / "vgg19.npz"
    out.parent.mkdir()
    old = b"the previous good weights " * 40_000
    out.write_bytes(old)
    stamp = out.stat().st_mtime_ns
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "asrth_jax.convert",
                             *_convert_argv(vgg19_pth, out, "--overwrite")],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            # The writing has begun: bytes in a file beside it, or in out itself.
            beside = [p for p in out.parent.iterdir() if p != out and p.stat().st_size]
            if beside or not out.exists() or out.stat().st_mtime_ns != stamp:
                break
            time.sleep(0.001)
        assert proc.poll() is None, "convert ended before it began writing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert out.read_bytes() == old
    # It was killed mid-write: the part-written new file is left beside (hidden), never
    # swapped in.
    assert [p.name.startswith(".vgg19.npz.") for p in out.parent.iterdir() if p != out] \
        == [True]


def test_a_full_disk_during_vgg19_conversion_keeps_the_old_file(tmp_path, vgg19_pth):
    """A real full disk (a 4 MiB tmpfs; needs root): one line, old file intact, no
    temporary file left."""
    with small_tmpfs(tmp_path / "small_disk", "size=4m") as disk:
        out = disk / "vgg19.npz"
        out.write_bytes(b"old weights")
        with pytest.raises(SystemExit) as info:
            convert.main(_convert_argv(vgg19_pth, out, "--overwrite"))
        message = str(info.value.code)
        assert message.startswith("error: ") and "\n" not in message, message
        assert "No space left on device" in message and "is unchanged" in message
        assert out.read_bytes() == b"old weights"
        assert sorted(p.name for p in disk.iterdir()) == ["vgg19.npz"]


@pytest.mark.parametrize("flag", ["--vgg19", "--hopenet", "--torch-checkpoint"])
def test_convert_output_path_is_checked_before_the_input_is_read(tmp_path, flag):
    """--out under a file, or in a read-only folder: one line about --out, although the
    input does not even exist (it would be read first otherwise)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    argv = [flag, str(tmp_path / "missing_input"), "--out", str(a_file / "sub" / "w.npz")]
    if flag == "--torch-checkpoint":
        argv += ["--config", str(tmp_path / "missing.py")]
    with pytest.raises(SystemExit) as info:
        convert.main(argv)
    message = str(info.value.code)
    assert message.startswith("error: --out") and "is a file" in message, message
    assert "\n" not in message and "missing_input" not in message


def test_convert_into_a_read_only_folder_is_one_line_before_reading(tmp_path):
    """A read-only filesystem (a real read-only tmpfs; needs root): one line about --out
    before the (missing) input is read."""
    with small_tmpfs(tmp_path / "read_only", "ro,size=1m") as disk:
        for argv in (["--vgg19", str(tmp_path / "missing.pth"), "--out", str(disk / "w.npz")],
                     ["--torch-checkpoint", str(tmp_path / "missing.pth"), "--config",
                      str(tmp_path / "missing.py"), "--out", str(disk / "ckpt")]):
            with pytest.raises(SystemExit) as info:
                convert.main(argv)
            message = str(info.value.code)
            assert message.startswith("error: --out") and "is not writable" in message, message
