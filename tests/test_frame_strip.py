"""frame_strip: evenly spaced frames of a video stacked top to bottom, enlarged."""

from __future__ import annotations

import numpy as np
import pytest

from asrth_jax import frame_strip, media


def test_strip_takes_first_and_last_frame_evenly_spaced_and_enlarges():
    frames = np.zeros((9, 4, 6, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(9) * 10  # frame t's marker
    out = frame_strip.strip(frames, rows=3, scale=2)
    assert out.shape == (3 * 4 * 2, 6 * 2, 3)
    assert [int(out[r * 8, 0, 0]) for r in range(3)] == [0, 40, 80]
    assert int(out[1, 1, 0]) == 0 and int(out[0, 1, 0]) == 0  # nearest: 2x2 blocks
    assert out[:2, :2, 0].tolist() == [[0, 0], [0, 0]] and out[8:10, :2, 0].min() == 40


def test_cli_writes_png_and_refuses_to_overwrite(tmp_path):
    video = tmp_path / "v.mp4"
    media.write_video(video, [np.full((16, 16, 3), 20 * i, np.uint8) for i in range(6)], 10)
    out = frame_strip.main([str(video), "--out", str(tmp_path / "s.png"), "--rows", "2",
                            "--scale", "1"])
    assert media.read_image(out).shape == (32, 16, 3)
    with pytest.raises(SystemExit, match="exists; choose another path or pass --overwrite"):
        frame_strip.main([str(video), "--out", str(out)])
    with pytest.raises(SystemExit, match="missing.mp4 does not exist"):
        frame_strip.main([str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "x.png")])
