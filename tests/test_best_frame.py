"""`animate --find-best-frame` picks the frame the reference's rule picks (FOMM/AdaSR
`demo.py`: landmarks centred, divided by sqrt of their 2-D hull area, least sum of
squared differences to the source's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from asrth_jax import akd
from asrth_jax.best_frame import BestFrameError, find_best_frame

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def reference_find_best_frame(kp_source: np.ndarray, kp_frames: list[np.ndarray]) -> int:
    """The reference's loop with `fa.get_landmarks(...)[0]` replaced by given landmarks."""

    def normalize_kp(kp):
        kp = kp - kp.mean(axis=0, keepdims=True)
        area = ConvexHull(kp[:, :2]).volume
        area = np.sqrt(area)
        kp[:, :2] = kp[:, :2] / area
        return kp

    kp_source = normalize_kp(kp_source)
    norm = float("inf")
    frame_num = 0
    for i, kp_driving in enumerate(kp_frames):
        kp_driving = normalize_kp(kp_driving)
        new_norm = (np.abs(kp_source - kp_driving) ** 2).sum()
        if new_norm < norm:
            norm = new_norm
            frame_num = i
    return frame_num


def _tagged(n: int) -> list[np.ndarray]:
    """n tiny images, image i filled with the value i (its key into a landmark table)."""
    return [np.full((4, 4, 3), i, np.uint8) for i in range(n)]


def _lookup(table: list[np.ndarray | None]):
    return lambda image: table[int(image[0, 0, 0])]


def test_picks_what_the_reference_rule_picks_on_known_landmarks():
    rng = np.random.default_rng(0)
    face = rng.uniform(60, 200, (68, 2))
    for _ in range(20):
        # Each frame: the face moved, zoomed and deformed by its own amount.
        table = [face * rng.uniform(0.5, 2.0) + rng.uniform(-40, 40, 2)
                 + rng.normal(0, rng.uniform(1, 15), face.shape) for _ in range(13)]
        want = reference_find_best_frame(table[0].copy(), [t.copy() for t in table[1:]])
        images = _tagged(13)
        assert find_best_frame(images[0], images[1:], _lookup(table)) == want


def test_scale_and_position_do_not_count():
    face = np.random.default_rng(1).uniform(60, 200, (68, 2))
    near = face + np.random.default_rng(2).normal(0, 2.0, face.shape)  # a few px off
    same_shape = 2.5 * face + np.array([30.0, -20.0])  # far in pixels, same landmarks
    table = [face, near, face[::-1] * 0.9, same_shape, near + 5]
    images = _tagged(5)
    assert find_best_frame(images[0], images[1:], _lookup(table)) == 2  # table[3]
    assert reference_find_best_frame(face.copy(), [t.copy() for t in table[1:]]) == 2
    raw = [np.square(face - t).sum() for t in table[1:]]
    assert int(np.argmin(raw)) == 0  # unnormalised, the nearby frame would win


def test_frames_without_a_face_are_passed_over():
    face = np.random.default_rng(3).uniform(60, 200, (68, 2))
    table = [face, None, face * 1.1 + 3, None, face + 9 * np.sin(face)]
    images = _tagged(5)
    assert find_best_frame(images[0], images[1:], _lookup(table)) == 1


@pytest.mark.parametrize("table, needle", [
    ([None, np.eye(3, 2)], "no face found in the source"),
    ([np.array([[0.0, 0], [1, 1], [2, 2], [3, 3.0]]), np.eye(3, 2)], "source"),  # a line
    ([np.eye(3, 2), None, None], "any of the 2 driving frames"),
])
def test_no_face_is_a_one_line_error(table, needle):
    images = _tagged(len(table))
    with pytest.raises(BestFrameError) as err:
        find_best_frame(images[0], images[1:], _lookup(table))
    message = str(err.value)
    assert needle in message and "--find-best-frame" in message and "\n" not in message


@pytest.mark.skipif(not (REAL / "529_2.mp4").exists(), reason="real clips not available")
@pytest.mark.skipif(akd.status() is not None, reason=str(akd.status()))
def test_on_a_real_clip_the_source_frame_itself_is_found():
    from asrth_jax import media

    frames = media.resize_frames(media.read_video(REAL / "529_2.mp4", max_frames=8), 256)
    for index in (2, 6):
        assert find_best_frame(frames[index], frames) == index


@pytest.mark.skipif(not (REAL / "529_2.mp4").exists(), reason="real clips not available")
@pytest.mark.skipif(akd.status() is not None, reason=str(akd.status()))
def test_animate_cli_uses_the_rule_and_says_no_face_in_one_line(tmp_path, capsys):
    import cv2
    from animate_fixtures import tiny_checkpoint

    from asrth_jax import animate

    files = tiny_checkpoint(tmp_path)
    common = ["--checkpoint", files["ckpt"], "--config", files["config"],
              "--driving", str(REAL / "529_2.mp4"), "--max-frames", "6", "--quiet",
              "--find-best-frame"]
    animate.main([*common, "--source", str(REAL / "demo_img_1.jpg"),
                  "--out", str(tmp_path / "ok.mp4")])
    assert "best frame: " in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(SystemExit) as exc:
        animate.main([*common, "--source", str(blank), "--out", str(tmp_path / "no.mp4")])
    message = str(exc.value.code)
    assert message.startswith("error: --find-best-frame: no face found in the source")
    assert "\n" not in message and not (tmp_path / "no.mp4").exists()
