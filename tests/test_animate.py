"""`python -m asrth_jax.animate` on the real clips with tiny random models."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from animate_fixtures import REAL, tiny_checkpoint

from asrth_jax import animate, media, model_loading

pytestmark = pytest.mark.skipif(not (REAL / "529_2.mp4").exists(),
                                reason="real clips not available")
FRAMES = 8


def _frames_and_fps(path: Path) -> tuple[int, float, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    count, shape = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        count += 1
        shape = frame.shape[:2]
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return count, fps, shape


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("animate")
    files = tiny_checkpoint(root)
    # driving clip with an audio track: 8 frames of 529_2.mp4 (15 fps) + a sine
    with_audio = root / "talk_audio.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y",
                    "-i", str(REAL / "529_2.mp4"), "-f", "lavfi",
                    "-i", "sine=frequency=440:duration=3", "-frames:v", str(FRAMES),
                    "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-shortest", str(with_audio)], check=True)
    return {"root": root, **files, "audio_clip": with_audio}


def _run(setup, out: Path, *extra: str, source: str | None = None,
         driving: str | None = None, weights: tuple[str, ...] | None = None) -> Path:
    args = [*(weights or ("--checkpoint", setup["ckpt"])), "--config", setup["config"],
            "--source", source or str(REAL / "demo_img_1.jpg"),
            "--driving", driving or str(REAL / "529_2.mp4"), "--out", str(out),
            "--max-frames", str(FRAMES), "--batch-size", "4", "--quiet", *extra]
    return animate.main(args)


def test_random_checkpoint_mp4(setup):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _run(setup, setup["root"] / "plain.mp4", "--adapt-scale")
    # imageio-ffmpeg's writer used preexec_fn, so JAX's fork hook warned on every run
    forks = [str(w.message) for w in caught if "fork" in str(w.message)]
    assert not forks, forks[0]
    count, fps, shape = _frames_and_fps(out)
    assert (count, shape) == (FRAMES, (64, 64))
    assert fps == pytest.approx(15.0, rel=1e-3)
    assert not media.probe_video(out).has_audio  # 529_2.mp4 has no audio


def test_audio_copied_side_by_side_crop_best_frame(setup):
    out = _run(setup, setup["root"] / "audio.mp4", "--side-by-side", "--crop",
               "--find-best-frame", "--yaw", "10",
               driving=str(setup["audio_clip"]), source=str(REAL / "tpsmm_source.png"))
    count, fps, shape = _frames_and_fps(out)
    assert (count, shape) == (FRAMES, (64, 192))
    assert fps == pytest.approx(15.0, rel=1e-3)
    assert media.probe_video(out).has_audio


def test_torch_release_checkpoint(setup, tmp_path):
    ref = pytest.importorskip("reference_torch")
    nets = ref.build_reference(ref.tiny_model_params())
    pth = tmp_path / "mix-train.pth.tar"
    ref.random_released_checkpoint(nets, str(pth), seed=3)
    out = _run(setup, tmp_path / "torch.mp4", weights=("--torch-checkpoint", str(pth)))
    count, fps, shape = _frames_and_fps(out)
    assert (count, shape) == (FRAMES, (64, 64))


def test_source_modes_become_rgb(tmp_path):
    gray = (np.arange(30 * 40, dtype=np.uint8).reshape(30, 40))
    rgba = np.dstack([np.full((30, 40, 3), 200, np.uint8), np.zeros((30, 40), np.uint8)])
    deep = (np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50)
    for name, img in (("gray.png", gray), ("rgba.png", rgba), ("deep.png", deep)):
        cv2.imwrite(str(tmp_path / name), img)
        rgb = media.read_image(tmp_path / name)
        assert rgb.shape == (30, 40, 3) and rgb.dtype == np.float32
        assert 0.0 <= rgb.min() and rgb.max() <= 1.0
        assert media.resize_image(rgb, 16).shape == (16, 16, 3)


def _error(setup, capsys, out: Path, *extra, **kwargs) -> str:
    with pytest.raises(SystemExit) as exc:
        _run(setup, out, *extra, **kwargs)
    message = str(exc.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_bad_inputs_one_line_errors(setup, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert "cannot read image" in _error(setup, capsys, tmp_path / "a.mp4", source=str(bad))
    assert "does not exist" in _error(setup, capsys, tmp_path / "a.mp4",
                                      source=str(tmp_path / "none.jpg"))
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"\x00" * 100)
    assert "bad.mp4" in _error(setup, capsys, tmp_path / "a.mp4", driving=str(bad_video))
    assert "does not exist" in _error(
        setup, capsys, tmp_path / "a.mp4", weights=("--checkpoint", str(tmp_path / "nock")))
    # a checkpoint of another architecture: config mismatch
    from configs import demo  # the CPU demo config has other widths

    other = tmp_path / "demo_cfg.py"
    other.write_text(Path(demo.__file__).read_text())
    with pytest.raises(SystemExit) as exc:
        animate.main(["--checkpoint", setup["ckpt"], "--config", str(other),
                      "--source", str(REAL / "demo_img_1.jpg"),
                      "--driving", str(REAL / "529_2.mp4"), "--out", str(tmp_path / "m.mp4"),
                      "--max-frames", "2", "--quiet"])
    assert "does not match" in str(exc.value.code) and "\n" not in str(exc.value.code)


def test_existing_output_refused(setup, tmp_path, capsys):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    assert "--overwrite" in _error(setup, capsys, out)
    assert out.read_bytes() == b"keep me"


def test_bad_options_refused_before_the_model(setup, tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the options were checked")

    monkeypatch.setattr(model_loading, "load_generator_side", no_model)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    folder = tmp_path / "out.mp4"
    folder.mkdir()
    cases = [
        ((), str(a_file / "out.mp4"), "is a file, not a folder"),
        ((), str(folder), "is a folder"),
        (("--overwrite",), str(folder), "is a folder"),
        ((), "/proc/asrth_out.mp4", "cannot write in /proc"),  # read-only even for root
        (("--fps", "-5"), None, "--fps must be a positive number"),
        (("--fps", "nan"), None, "--fps must be a positive number"),
        (("--max-frames", "-2"), None, "--max-frames must be >= 0"),
        (("--paste-back",), None, "needs --crop"),
        (("--yaw", "inf"), None, "--yaw must be a finite angle"),
    ]
    for extra, out, expected in cases:
        message = _error(setup, capsys, Path(out or tmp_path / "ok.mp4"), *extra)
        assert expected in message, (extra, out, message)
    assert not (tmp_path / "ok.mp4").exists()


def test_library_path_reports_every_batch(setup, tmp_path):
    """The function the CLI and the app share; progress comes from the real batches."""
    from asrth_jax.config_lib import load_config_file

    config = load_config_file(setup["config"])
    animator = animate.load_animator(config, checkpoint=setup["ckpt"], torch_checkpoint=None,
                                     batch_size=4)
    calls = []
    opts = animate.AnimateOptions(source=str(REAL / "demo_img_1.jpg"),
                                  driving=str(REAL / "529_2.mp4"), out=str(tmp_path / "lib.mp4"),
                                  max_frames=6, fps=10)
    result = animate.animate(opts, animator, int(config.image_size),
                             lambda done, total: calls.append((done, total)))
    assert calls == [(0, 6), (4, 6), (6, 6)]  # batches of 4: 4 then 2 (padded)
    assert (result.frames, result.fps, result.with_audio) == (6, 10.0, False)
    assert _frames_and_fps(result.out)[:2] == (6, pytest.approx(10.0, rel=1e-3))
