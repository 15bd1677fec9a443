"""The web app's handlers in-process (no browser): upload previews and the face-crop
defaults they set, the frame limit, Stop, and messages in the page's words."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from animate_fixtures import REAL, tiny_checkpoint
from test_media_limits import write_gray_png_bomb

from asrth_jax import media

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None or not (REAL / "390.mp4").exists(),
    reason="needs gradio and the real clips")
SIZE = 64


def _blue_wall(path: Path, side: int = 200) -> Path:
    cv2.imwrite(str(path), np.full((side, side, 3), (200, 60, 20), np.uint8))  # no skin
    return path


def test_portrait_upload_sets_crop_and_paste_back_by_its_size(tmp_path):
    from asrth_jax import app

    preview, line, crop, paste = app.describe_portrait(str(REAL / "demo_img_1.jpg"), SIZE)
    assert (crop, paste) == (True, True), line
    assert "512x512 portrait" in line and "green box" in line
    assert preview.shape == (320, 320, 3) and preview.dtype == np.uint8
    assert (preview[..., 1] == 255).any()  # the face box is drawn
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((SIZE, SIZE, 3), 90, np.uint8))
    _, line, crop, paste = app.describe_portrait(str(small), SIZE)
    assert (crop, paste) == (False, False) and "used whole" in line
    _, line, crop, _ = app.describe_portrait(str(_blue_wall(tmp_path / "wall.png")), SIZE)
    assert crop and "no face found" in line and "Centre crop when no face is found" in line
    # a decompression bomb: refused from its header, in the page's words (no folder)
    bomb = write_gray_png_bomb(tmp_path / "bomb.png", 16000)
    preview, line, crop, _ = app.describe_portrait(str(bomb), SIZE)
    assert preview is None and "bomb.png is too large" in line and str(tmp_path) not in line


def test_portrait_preview_is_upright(tmp_path):
    from PIL import Image

    from asrth_jax import app

    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: stored sideways, shown turned 90 degrees
    path = tmp_path / "phone.jpg"
    Image.fromarray(np.zeros((30, 60, 3), np.uint8)).save(path, exif=exif)
    preview, line, _, _ = app.describe_portrait(str(path), 16)
    assert preview.shape[:2] == (60, 30) and "30x60 portrait" in line and "upright" in line


def test_driving_upload_says_what_the_frame_limit_keeps():
    from asrth_jax import app

    preview, line = app.describe_driving(str(REAL / "390.mp4"), 100)
    assert preview.shape == (269, 320, 3)  # 400x336 first frame, shrunk
    assert line == ("240 frames at 24 fps, 400x336; the first 100 will be used "
                    "(the frame limit).")
    assert "will be used" not in app.describe_driving(str(REAL / "390.mp4"), 240)[1]
    assert "one image" in app.describe_driving(str(REAL / "demo_img_2.jpg"), 5)[1]


@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    from asrth_jax import animate, app
    from asrth_jax.config_lib import load_config_file

    root = tmp_path_factory.mktemp("app_handler")
    files = tiny_checkpoint(root)
    animator = animate.load_animator(load_config_file(files["config"]),
                                     checkpoint=files["ckpt"], torch_checkpoint=None,
                                     batch_size=2)
    workdir = root / "work"
    workdir.mkdir()
    handle, stop = app.make_handler(animator, SIZE, workdir, max_portrait_side=300)
    return {"handle": handle, "stop": stop, "workdir": workdir}


def _request(handlers, portrait, driving, *, crop=True, paste=True, centre=False,
             frame_limit=8, session="s", progress=None):
    return handlers["handle"](
        str(portrait), str(driving), crop, paste, centre, "relative", False, False, False,
        False, 0, 0, 0, frame_limit, SimpleNamespace(session_hash=session),
        progress or (lambda *args, **kwargs: None))


def test_frame_limit_and_portrait_cap_reach_the_result(handlers):
    _, _, status = _request(handlers, REAL / "demo_img_1.jpg", REAL / "390.mp4", frame_limit=6)
    video = status.splitlines()[0]
    assert video.startswith("6 frames at 24 fps"), status
    assert ("used the first 6 of 240 frames of the driving video: the frame limit is 6"
            in status)
    # paste-back's output is bounded by the server's portrait size limit (300 here)
    assert "was scaled to 300x300: the server's portrait size limit is 300" in status
    results = sorted(handlers["workdir"].glob("result_*/result.mp4"))
    assert media.read_video(results[-1]).shape == (6, 300, 300, 3)


def test_stop_ends_the_request_at_the_next_batch(handlers):
    def press_stop_once_started(progress_value, **kwargs):
        handlers["stop"](SimpleNamespace(session_hash="stopper"))

    before = set(handlers["workdir"].glob("result_*/*"))
    _, _, status = _request(handlers, REAL / "demo_img_1.jpg", REAL / "390.mp4",
                            session="stopper", progress=press_stop_once_started)
    assert status == "Stopped after 2 of 8 frames; nothing was kept.", status
    assert set(handlers["workdir"].glob("result_*/*")) == before  # no partial file
    assert handlers["stop"](SimpleNamespace(session_hash="stopper")) == "Nothing is running."


def test_errors_are_in_the_pages_words(handlers, tmp_path):
    import gradio as gr

    wall = _blue_wall(tmp_path / "wall.png")
    with pytest.raises(gr.Error) as err:
        _request(handlers, wall, REAL / "390.mp4")
    message = err.value.message
    assert message.startswith("no face found in the portrait wall.png"), message
    assert "“Centre crop when no face is found”" in message
    fake = tmp_path / "photo.jpg"
    fake.write_text("not a JPEG")
    with pytest.raises(gr.Error) as err:
        _request(handlers, fake, REAL / "390.mp4")
    assert err.value.message.startswith("cannot read image photo.jpg: not a decodable image")
    for message in (err.value.message,):
        assert "--" not in message and str(tmp_path) not in message
    with pytest.raises(gr.Error) as err:
        _request(handlers, REAL / "demo_img_1.jpg", REAL / "390.mp4", crop=False)
    assert err.value.message == ("“Paste back into the portrait” puts the face crop back into "
                                 "the portrait, so it needs “Face crop”")
    # the centre crop as an explicit choice: it runs, and says so
    _, _, status = _request(handlers, wall, REAL / "390.mp4", centre=True, frame_limit=2)
    assert "no face found in the portrait wall.png: its centre square was used" in status


def test_server_limits_have_defaults_and_are_checked_at_start():
    from asrth_jax import app

    args = app._parse(["--checkpoint", "c", "--config", "f"])
    assert (args.max_frames, args.max_portrait_side, args.max_upload_mb) == (1500, 2048, 200)
    for flag in ("--max-frames", "--max-portrait-side", "--max-upload-mb"):
        with pytest.raises(SystemExit, match=f"^error: {flag} must be >= 1, got 0$"):
            app.main(["--checkpoint", "c", "--config", "f", flag, "0"])
