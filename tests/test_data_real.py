"""Real clips: VoxCeleb layout -> prepare (crop, TFDS ArrayRecord) -> Grain batches."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from data_pipelines import face_crop, pipeline, prepare, video_io
from data_pipelines.config import default_data_config

REAL = Path(__file__).parents[1].parent / "shared" / "data" / "real"
CLIPS = ["390.mp4", "529_2.mp4", "demo_video_1.mp4", "tpsmm_driving.mp4"]
pytestmark = pytest.mark.skipif(
    not all((REAL / c).exists() for c in CLIPS), reason=f"real clips not found in {REAL}")
NUM_FRAMES = 6


@pytest.fixture(scope="module")
def vox_root(tmp_path_factory) -> Path:
    """Tiny VoxCeleb layout: train/ has a frame folder named *.mp4 and an mp4 link."""
    root = tmp_path_factory.mktemp("vox")
    for split in ("train", "test"):
        (root / split).mkdir()
    names = ["id10001#aaa#000001#000007", "id10001#bbb#000002#000008",
             "id10002#ccc#000003#000009", "id10003#ddd#000004#000010"]
    splits = ["train", "train", "train", "test"]
    for clip, name, split in zip(CLIPS, names, splits, strict=True):
        frames = video_io.read_video(REAL / clip, max_frames=NUM_FRAMES)
        if clip == "529_2.mp4":  # an .mp4 file (symlink: nothing copied)
            (root / split / f"{name}.mp4").symlink_to(REAL / clip)
            continue
        folder = root / split / f"{name}.mp4"  # FOMM: frame folders named like videos
        folder.mkdir()
        for i, f in enumerate(frames):
            small = cv2.resize(f, (96, 96), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / f"{i:07d}.png"), small[..., ::-1])
    return root


@pytest.fixture(scope="module")
def prepared(vox_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare.main(["--videos", str(vox_root), "--out", str(out), "--size", "64", "--crop",
                  "--max-frames", str(NUM_FRAMES)])
    return out


def test_face_crop_box_is_square_and_inside():
    frames = video_io.read_video(REAL / "390.mp4", max_frames=8)
    box = face_crop.face_crop_box(frames)
    left, top, right, bot = box
    assert right - left == bot - top > 0
    assert 0 <= left and 0 <= top and right <= frames.shape[2] and bot <= frames.shape[1]
    crop = face_crop.crop_video(frames, 64)
    assert crop.shape == (8, 64, 64, 3) and crop.dtype == np.uint8


def test_prepare_then_grain(prepared):
    c = default_data_config()
    c.kind = "tfds"
    c.tfds_dir = str(prepared)
    c.image_size = 64
    c.num_repeats = 4
    c.degradation.preset = "downsample"
    c.read_threads = 1
    c.prefetch = 1
    b = next(pipeline.make_train_loader(c, seed=0, global_batch_size=4))
    assert b["source"].shape == (4, 64, 64, 3) and b["source_lq"].shape == (4, 64, 64, 3)
    assert b["driving"].std() > 0.05  # real content, not blank frames
    ev = pipeline.make_eval_dataset(c, batch_size=8)
    first = ev[0]
    assert first["frame_index"][:, 1].tolist() == list(range(NUM_FRAMES))


def test_prepare_rerun_skips_finished(prepared, vox_root, capsys):
    cache = next((prepared / "cache" / "train").glob("*.npz"))
    before = cache.stat().st_mtime_ns
    prepare.main(["--videos", str(vox_root), "--out", str(prepared), "--size", "64", "--crop",
                  "--max-frames", str(NUM_FRAMES)])
    assert cache.stat().st_mtime_ns == before
    assert "up to date" in capsys.readouterr().out


def test_raw_vox_layout_with_id_sampling(vox_root):
    c = default_data_config()
    c.kind = "vox"
    c.root = str(vox_root)
    c.image_size = 64
    c.id_sampling = True
    c.num_repeats = 2
    c.degradation.preset = "realesrgan2"
    c.read_threads = 1
    c.prefetch = 1
    src = pipeline.make_pair_source(c, "train")
    assert len(src) == 2 * 2  # two identities in train, two repeats
    b = next(pipeline.make_train_loader(c, seed=1, global_batch_size=2))
    assert b["source_lq"].shape == (2, 64, 64, 3)


def test_corrupt_video_is_one_clear_line(tmp_path):
    for split in ("train", "test"):  # both splits filled: the decode is what fails
        (tmp_path / "vids" / split).mkdir(parents=True)
        (tmp_path / "vids" / split / f"broken_{split}.mp4").write_bytes(b"not a video")
    (tmp_path / "vids" / "train" / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(SystemExit) as err:
        prepare.main(["--videos", str(tmp_path / "vids"), "--out", str(tmp_path / "out"),
                      "--size", "32"])
    msg = str(err.value.code)
    assert "broken.mp4" in msg and "\n" not in msg
    with pytest.raises(SystemExit, match="not a folder"):
        prepare.main(["--videos", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
