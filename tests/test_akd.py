"""AKD from the offline face-landmark detector (`data_pipelines.face_mesh`: MediaPipe models
run through LiteRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asrth_jax import akd, errors
from data_pipelines import face_mesh

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def test_akd_with_given_landmarks():
    pts = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert akd.average_keypoint_distance(pts + [3.0, 4.0], pts) == pytest.approx(5.0)
    assert np.isnan(akd.average_keypoint_distance(None, pts))
    # any landmark function (here: the brightest pixel) plugs into akd
    imgs = np.zeros((2, 8, 8, 3), np.float32)
    imgs[0, 2, 3] = 1.0
    imgs[1, 5, 3] = 1.0

    def brightest(img):
        y, x = np.unravel_index(np.argmax(img.sum(-1)), img.shape[:2])
        return np.array([[x, y]], np.float32)

    np.testing.assert_allclose(akd.akd(imgs, imgs[::-1], brightest), [3.0, 3.0])


def test_anchors_match_blazeface_short_range():
    anchors = face_mesh._ssd_anchors()
    assert anchors.shape == (896, 2)
    # 16x16 cells of stride 8 with 2 anchors each, then 8x8 cells of stride 16 with 6
    np.testing.assert_allclose(anchors[:2], [[1 / 32, 1 / 32]] * 2)
    np.testing.assert_allclose(anchors[2], [3 / 32, 1 / 32])
    np.testing.assert_allclose(anchors[512:518], [[1 / 16, 1 / 16]] * 6)
    np.testing.assert_allclose(anchors[-1], [15 / 16, 15 / 16])


def test_missing_model_file_is_one_line(tmp_path):
    pytest.importorskip("ai_edge_litert")
    with pytest.raises(face_mesh.FaceMeshUnavailableError) as err:
        face_mesh.FaceLandmarker(model_dir=tmp_path)
    assert "face model" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, errors.AsrthError)  # a CLI's main() makes it one line


@pytest.fixture(scope="module")
def clip_256():
    pytest.importorskip("ai_edge_litert")
    if not (REAL / "529_2.mp4").exists():
        pytest.skip("real clips not available")
    import imageio.v3 as iio

    frames = iio.imread(REAL / "529_2.mp4", index=None)[:24:4]
    return np.stack([akd.at_akd_size(f) for f in frames])


def test_akd_of_a_real_clip_is_zero_against_itself_and_four_when_shifted(clip_256):
    assert clip_256.shape[1:] == (256, 256, 3)
    assert akd.status() is None
    kps = akd.landmarks_of(clip_256)
    assert all(k is not None and k.shape == (face_mesh.NUM_LANDMARKS, 2) for k in kps)
    # the landmarks sit on the face, not spread over the frame
    spread = np.ptp(kps[0], axis=0)
    assert np.all((40 < spread) & (spread < 200))
    np.testing.assert_array_equal(akd.akd(clip_256, clip_256), 0.0)
    for axis in (1, 2):  # 4 pixels right, then 4 pixels down
        shifted = np.roll(clip_256, 4, axis=axis)
        dist = akd.akd(shifted, clip_256)
        assert np.all((3.0 < dist) & (dist < 5.0)), dist
        assert dist.mean() == pytest.approx(4.0, abs=0.4)


def test_akd_is_measured_at_256(clip_256):
    """A frame given at 512 is measured at 256: the shift of 8 pixels there reads 4."""
    import cv2

    big = np.stack([cv2.resize(f, (512, 512), interpolation=cv2.INTER_LINEAR)
                    for f in clip_256[:2]])
    dist = akd.akd(np.roll(big, 8, axis=2), big)
    assert np.all((3.0 < dist) & (dist < 5.0)), dist


def test_no_face_gives_nan(clip_256):
    flat = np.full((2, 256, 256, 3), 0.5, np.float32)
    assert akd.face_landmarks(flat[0]) is None
    assert np.all(np.isnan(akd.akd(flat, clip_256[:2])))
