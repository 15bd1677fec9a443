"""What one upload may cost: pixel limits read from headers, frames shrunk as they stream,
EXIF orientation, inputs that cannot hold a face (issue 28, items 2 and 3)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from asrth_jax import animate, media

ROOT = Path(__file__).resolve().parents[1]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_gray_png_bomb(path: Path, side: int) -> Path:
    """A side x side 8-bit gray PNG of zeros, written row by row (never held decoded)."""
    squeeze = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    body = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body)
                     + _chunk(b"IEND", b""))
    return path


# Runs in a fresh interpreter so its peak memory is its own: imports first, then the
# peak before and after reading the inputs the way the app and the CLI do.
_MEASURE = """
import json, resource, sys, time
from asrth_jax import animate
import cv2, PIL.Image  # noqa: F401 - imported before the baseline
opts = animate.AnimateOptions(**json.loads(sys.argv[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    inputs = animate.load_inputs(opts, int(sys.argv[2]))
    outcome = {"frames": len(inputs.driving), "notes": list(inputs.notes)}
except animate.AnimateError as err:
    outcome = {"error": str(err)}
outcome["seconds"] = time.perf_counter() - t0
outcome["growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(outcome))
"""


def measure_load_inputs(options: dict, size: int = 64, timeout: float = 120) -> dict:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(options), str(size)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_decompression_bomb_refused_from_its_header(tmp_path):
    bomb = write_gray_png_bomb(tmp_path / "portrait.png", 16000)
    assert bomb.stat().st_size < 1_000_000  # 256 megapixels in a few hundred KB
    driver = tmp_path / "driver.png"
    cv2.imwrite(str(driver), np.full((64, 64, 3), 128, np.uint8))
    outcome = measure_load_inputs({"source": str(bomb), "driving": str(driver),
                                   "out": str(tmp_path / "out.png")}, timeout=60)
    message = outcome.get("error", "")
    assert "too large (256 megapixels" in message and "\n" not in message, outcome
    assert outcome["seconds"] < 1.0, outcome
    assert outcome["growth_mb"] < 200, outcome
    # under PIL's own bomb limit (179 MP) and over ours: the size is named too
    with pytest.raises(media.MediaError, match=r"too large \(9000x9000 pixels, 81 megapixels"):
        media.read_image_header(write_gray_png_bomb(tmp_path / "smaller.png", 9000))


def test_video_frames_over_the_limit_refused_before_decoding(tmp_path, monkeypatch):
    clip = tmp_path / "wide.mp4"
    media.write_video(clip, [np.zeros((96, 128, 3), np.uint8)] * 2, 25)
    monkeypatch.setattr(media, "MAX_VIDEO_FRAME_PIXELS", 64 * 64)
    with pytest.raises(media.MediaError, match=r"too large \(128x96 pixels"):
        media.probe_video(clip)
    with pytest.raises(media.MediaError, match="too large"):
        next(media.iter_video_frames(clip))


def _exif_with_orientation(orientation: int):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_honoured(tmp_path, suffix):
    from PIL import Image, ImageOps

    rng = np.random.default_rng(0)
    stored = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    stored[:8, :8] = 255  # a corner that shows which way is up
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}{suffix}"
        Image.fromarray(stored).save(path, exif=_exif_with_orientation(orientation),
                                     **({"quality": 100} if suffix == ".jpg" else {}))
        header = media.read_image_header(path)
        assert header.orientation == orientation
        with Image.open(path) as img:
            expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        got = media.to_uint8(media.read_image(path))
        assert got.shape == expected.shape == (
            (24, 40, 3) if orientation < 5 else (40, 24, 3)), orientation
        assert (header.height, header.width) == got.shape[:2]
        tolerance = 0 if suffix == ".png" else 4  # two JPEG decoders' rounding
        assert np.abs(got.astype(int) - expected).max() <= tolerance, orientation


def _image(path: Path, height: int, width: int) -> str:
    rng = np.random.default_rng(1)
    cv2.imwrite(str(path), (rng.random((height, width, 3)) * 255).astype(np.uint8))
    return str(path)


def test_inputs_that_cannot_hold_a_face_are_refused_or_noted(tmp_path):
    driver = _image(tmp_path / "driver.png", 64, 64)

    def load(source: str, size: int = 64, **extra) -> animate.Inputs:
        opts = animate.AnimateOptions(source=source, driving=driver,
                                      out=str(tmp_path / "out.png"), **extra)
        return animate.load_inputs(opts, size)

    with pytest.raises(animate.AnimateError, match=r"\(20x24\) is too small to hold a face"):
        load(_image(tmp_path / "tiny.png", 24, 20))
    with pytest.raises(animate.AnimateError, match=r"\(300x100\) is 3.0 times as wide.*--crop"):
        load(_image(tmp_path / "strip.png", 100, 300))
    stretched = load(_image(tmp_path / "wide.png", 100, 150))
    assert any("stretched 1.50x" in note for note in stretched.notes), stretched.notes
    small = _image(tmp_path / "small.png", 40, 40)
    assert load(small).notes == ()  # 1.6x up to 64: said only past 2x
    assert any("enlarged 3.2x" in note for note in load(small, 128).notes)
    assert load(_image(tmp_path / "square.png", 64, 64)).notes == ()
    # the same extreme shape with a face crop is a square box: no stretch, no refusal
    cropped = load(str(tmp_path / "strip.png"), crop=True, center_crop_fallback=True)
    assert cropped.source.shape == (64, 64, 3)
    assert not any("stretched" in note for note in cropped.notes)


def test_no_face_is_one_line_unless_the_centre_crop_is_chosen(tmp_path):
    blue = tmp_path / "wall.png"
    cv2.imwrite(str(blue), np.full((200, 200, 3), (200, 60, 20), np.uint8))  # BGR: no skin
    opts = animate.AnimateOptions(source=str(blue), driving=str(blue),
                                  out=str(tmp_path / "out.png"), crop=True)
    with pytest.raises(animate.AnimateError, match="no face found in the portrait .*wall.png.*"
                       "--center-crop-fallback"):
        animate.load_inputs(opts, 64)
    import dataclasses

    inputs = animate.load_inputs(dataclasses.replace(opts, center_crop_fallback=True), 64)
    assert any("its centre square was used" in note for note in inputs.notes)


def test_page_wording_names_no_flag_and_no_folder(tmp_path):
    page = animate.Wording({"source": "the portrait", "crop": "Face crop",
                            "center_crop_fallback": "Centre crop"}, show_paths=False)
    bad = tmp_path / "deep" / "folder"
    bad.mkdir(parents=True)
    (bad / "me.jpg").write_bytes(b"not an image")
    opts = animate.AnimateOptions(source=str(bad / "me.jpg"), driving=str(bad / "me.jpg"),
                                  out=str(tmp_path / "out.png"), wording=page)
    with pytest.raises(animate.AnimateError) as err:
        animate.load_inputs(opts, 64)
    assert str(err.value).startswith("cannot read image me.jpg: ")
    assert str(tmp_path) not in str(err.value)
    missing = animate.AnimateOptions(source=str(bad / "gone.jpg"), driving=str(bad / "me.jpg"),
                                     out=str(tmp_path / "out.png"), wording=page)
    with pytest.raises(animate.AnimateError, match="^the portrait gone.jpg does not exist$"):
        animate.check_options(missing)


@pytest.fixture(scope="module")
def long_1080p_clip(tmp_path_factory) -> Path:
    """10 s of 1080p at 25 fps (250 frames, 1.5 GB decoded at full size)."""
    clip = tmp_path_factory.mktemp("long") / "long_1080p.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1920x1080:rate=25:duration=10", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip)], check=True)
    return clip


@pytest.mark.parametrize("crop", [False, True])
def test_long_1080p_clip_is_read_at_the_models_size(long_1080p_clip, tmp_path, crop):
    portrait = _image(tmp_path / "portrait.png", 64, 64)
    outcome = measure_load_inputs({"source": portrait, "driving": str(long_1080p_clip),
                                   "out": str(tmp_path / "out.mp4"), "crop": crop,
                                   "center_crop_fallback": True})
    assert outcome.get("frames") == 250, outcome
    # 250 full frames are 1483 MiB; at 64x64 they are 3 MiB (plus the decoder's own)
    assert outcome["growth_mb"] < 200, outcome
    print(f"crop={crop}: {outcome}")


_ANIMATE_MEASURED = """
import json, resource, sys
from asrth_jax import animate
ckpt, config, portrait, clip, warm_out, out = sys.argv[1:7]
common = ["--checkpoint", ckpt, "--config", config, "--source", portrait, "--quiet",
          "--batch-size", "4"]
animate.main(common + ["--driving", clip, "--out", warm_out, "--max-frames", "4"])  # compiles
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
animate.main(common + ["--driving", clip, "--out", out])
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"growth_mb": growth}))
"""


@pytest.mark.slow
def test_long_1080p_clip_is_animated_with_bounded_memory(long_1080p_clip, tmp_path):
    """End to end: `animate` on 250 1080p frames; peak memory after a warm-up run."""
    from animate_fixtures import tiny_checkpoint

    files = tiny_checkpoint(tmp_path)
    portrait = _image(tmp_path / "portrait.png", 64, 64)
    out = tmp_path / "long.mp4"
    proc = subprocess.run(
        [sys.executable, "-c", _ANIMATE_MEASURED, files["ckpt"], files["config"], portrait,
         str(long_1080p_clip), str(tmp_path / "warm.mp4"), str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    growth = json.loads(proc.stdout.strip().splitlines()[-1])["growth_mb"]
    print(f"peak growth animating 250 1080p frames: {growth:.0f} MB")
    assert media.read_video(out).shape == (250, 64, 64, 3)
    assert growth < 300, growth  # the 250 full frames alone are 1483 MiB
