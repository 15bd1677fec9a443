"""A driving image gives one image in its pose and expression."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from animate_fixtures import REAL, tiny_checkpoint

from asrth_jax import animate, media

SOURCE, DRIVER = REAL / "demo_img_1.jpg", REAL / "demo_img_2.jpg"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    if not DRIVER.exists():
        pytest.skip("real portraits not available")
    return tiny_checkpoint(tmp_path_factory.mktemp("image_driver"))


def _animate(files, out: Path, *extra: str) -> Path:
    return animate.main(["--checkpoint", files["ckpt"], "--config", files["config"],
                         "--source", str(SOURCE), "--driving", str(DRIVER), "--out", str(out),
                         "--quiet", *extra])


def test_image_driver_gives_one_image(files, tmp_path):
    relative = media.read_image(_animate(files, tmp_path / "relative.png"))
    assert relative.shape == (64, 64, 3)  # the model's (crop's) size
    # relative to the source's own pose: kp_source + (kp_driver - kp_source) = kp_driver
    absolute = media.read_image(_animate(files, tmp_path / "absolute.png", "--absolute"))
    assert np.abs(relative - absolute).max() <= 2 / 255
    panels = media.read_image(_animate(files, tmp_path / "panels.jpg", "--side-by-side",
                                       "--crop"))
    assert panels.shape == (64, 192, 3)


def test_image_driver_needs_an_image_out(files, tmp_path):
    with pytest.raises(SystemExit) as exc:
        _animate(files, tmp_path / "result.mp4")
    assert "must end in .png or .jpg" in str(exc.value.code)
    assert not (tmp_path / "result.mp4").exists()
