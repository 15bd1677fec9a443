"""--crop --paste-back: the animated face goes back into the full-resolution portrait."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from animate_fixtures import REAL, tiny_checkpoint

from asrth_jax import animate, media, paste_back
from data_pipelines import face_crop

PORTRAIT = REAL / "tpsmm_source.png"  # 676 x 680: not square, not the model's size


def test_feather_mask_and_paste_keep_the_outside():
    mask = paste_back.feather_mask(40, 0.1)  # band of 4 pixels
    assert mask.shape == (40, 40)
    assert mask[4:-4, 4:-4].min() == 1.0 and mask[0, 20] < 0.2 and mask[0, 0] < 0.2
    assert np.all(np.diff(mask[:5, 20]) > 0)  # rises monotonically across the band
    rng = np.random.default_rng(0)
    portrait = rng.random((50, 70, 3), dtype=np.float32)
    face = np.full((16, 16, 3), 0.5, np.float32)
    box = (20, 5, 60, 45)
    out = paste_back.paste(portrait, face, box)
    outside = np.ones((50, 70), bool)
    outside[5:45, 20:60] = False
    np.testing.assert_array_equal(out[outside], portrait[outside])
    np.testing.assert_allclose(out[9:41, 24:56], 0.5, atol=1e-6)  # interior: the face
    with pytest.raises(ValueError, match="not a square inside"):
        paste_back.paste(portrait, face, (50, 5, 90, 45))




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    if not PORTRAIT.exists():
        pytest.skip("real portraits not available")
    return tiny_checkpoint(tmp_path_factory.mktemp("paste_back"))


def _animate(files, out, driving, *extra):
    return animate.main(["--checkpoint", files["ckpt"], "--config", files["config"],
                         "--source", str(PORTRAIT), "--driving", str(driving),
                         "--out", str(out), "--crop", "--quiet", *extra])


def test_paste_back_image_keeps_the_portrait_outside_the_face(files, tmp_path):
    portrait = media.to_uint8(media.read_image(PORTRAIT))
    # the driver is the source's own frame
    pasted = media.to_uint8(media.read_image(
        _animate(files, tmp_path / "pasted.png", PORTRAIT, "--paste-back")))
    crop_only = media.to_uint8(media.read_image(_animate(files, tmp_path / "crop.png", PORTRAIT)))
    assert pasted.shape == portrait.shape  # the portrait's size, not the crop's
    assert crop_only.shape == (64, 64, 3)
    left, top, right, bottom = box = face_crop.face_crop_box(portrait[None])
    side = right - left
    band = paste_back.feather_width(side)
    outside = np.ones(portrait.shape[:2], bool)
    outside[top:bottom, left:right] = False
    diff = np.abs(pasted.astype(int) - portrait.astype(int))
    assert diff[outside].max() <= 1, box
    # inside the band the face is the crop result put back at the crop's place
    inner = (slice(top + band, bottom - band), slice(left + band, right - band))
    expected = np.clip(cv2.resize(crop_only.astype(np.float32), (side, side),
                                  interpolation=cv2.INTER_CUBIC), 0, 255)[band:-band, band:-band]
    misplaced = np.abs(pasted[inner].astype(np.float32) - expected).mean()
    assert misplaced < 1.0, misplaced
    assert diff[inner].mean() > 5  # the random model changed the face


def test_paste_back_video_has_the_portrait_size(files, tmp_path):
    out = _animate(files, tmp_path / "pasted.mp4", REAL / "529_2.mp4", "--paste-back",
                   "--max-frames", "2", "--side-by-side")
    frames = media.read_video(out)
    h, w = media.read_image(PORTRAIT).shape[:2]
    # side by side: portrait | driving at the portrait's height (square) | pasted result
    assert frames.shape == (2, h, w + h + w, 3)
