"""Real faces prepared by person: the manifest's person fixes names, split and id_sampling;
--track-faces cuts clips where the face is lost and stores face-mesh landmarks that the
landmark teachers read (in the synthetic heads' landmark order, mirrored the same way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_pipelines import face_crop, face_mesh, folders, prepare

REAL_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_faces"


def _write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("file\tperson_id\tnote\n" + "".join(f"{f}\t{p}\tx\n" for f, p in rows))
    return path


def test_a_persons_clips_share_a_split_and_are_named_by_person(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    rows = [(f"clip{i:02d}.mp4", f"p{i % 7}") for i in range(28)]
    for name, _ in rows:
        (root / name).touch()
    people = folders.read_people(_write_manifest(tmp_path / "m.tsv", rows))
    splits = folders.assign_splits(root, 0.8, people)
    by_split = {s: {people[p.name] for p in paths} for s, paths in splits.items()}
    assert by_split["train"] and by_split["test"]
    assert not by_split["train"] & by_split["test"]  # no person on both sides
    assert folders.clip_name(root / "clip03.mp4", people) == "p3#clip03"


def test_manifest_problems_are_one_line(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    (root / "a.mp4").touch()
    (root / "b.mp4").touch()
    people = folders.read_people(_write_manifest(tmp_path / "m.tsv", [("a.mp4", "p1")]))
    with pytest.raises(ValueError, match="b.mp4 is not in the manifest"):
        folders.assign_splits(root, 0.8, people)
    (tmp_path / "bad.tsv").write_text("name\tperson\n")
    with pytest.raises(ValueError, match="lacks the column.*'file', 'person_id'"):
        folders.read_people(tmp_path / "bad.tsv")
    with pytest.raises(SystemExit, match="--manifest .*missing.tsv does not exist"):
        prepare.main(["--videos", str(root), "--out", str(tmp_path / "o"),
                      "--manifest", str(tmp_path / "missing.tsv")])
    with pytest.raises(SystemExit, match="--track-faces crops by itself"):
        prepare.main(["--videos", str(root), "--out", str(tmp_path / "o"), "--track-faces",
                      "--crop"])


def _box_at(x: int):
    return (x, 10, x + 20, 30)


def test_face_tracks_cut_where_the_face_is_lost_or_jumps():
    frames = np.zeros((40, 64, 96, 3), np.uint8)
    # Face at x=10 for frames 0-11, lost 12-13, back 14-25, jumps to x=60 at 26-39;
    # frame indices are read from the frame's first pixel.
    for t in range(40):
        frames[t, 0, 0, 0] = t
    def detector(frame):
        t = int(frame[0, 0, 0])
        if t in (12, 13):
            return []
        return [_box_at(60 if t >= 26 else 10)]
    tracks = face_crop.face_tracks(frames, detector=detector, min_frames=5)
    assert [(a, b) for a, b, _ in tracks] == [(0, 12), (14, 26), (26, 40)]
    assert tracks[2][2][0] > tracks[1][2][0]  # the jumped face got its own box
    for _, _, (left, top, right, bottom) in tracks:
        assert right - left == bottom - top  # square, inside the frame
        assert 0 <= left and right <= 96 and 0 <= top and bottom <= 64
    assert [(a, b) for a, b, _ in face_crop.face_tracks(frames, detector=detector,
                                                        min_frames=13)] == [(26, 40)]


def test_tracked_clips_store_landmarks_in_the_clip_pixels_and_cut_where_the_mesh_fails():
    frames = np.zeros((20, 256, 256, 3), np.uint8)
    for t in range(20):
        frames[t, :, :, 0] = t

    def detector(frame):
        return [(0, 0, 256, 256)]

    mesh = np.tile(np.array([[64.5, 128.5]], np.float32), (468, 1))  # 256-px pixel centres

    def landmarker(frame):
        return None if int(frame[0, 0, 0]) == 9 else mesh

    clips = prepare.tracked_clips(frames, 64, 4, detector=detector, landmarker=landmarker)
    assert [len(c) for c, _ in clips] == [9, 10]  # frame 9 has no mesh: two clips
    clip, landmarks = clips[1]
    assert clip.shape == (10, 64, 64, 3) and landmarks.shape == (10, 13, 2)
    # 64.5 at 256 px (centres at +0.5) is pixel 15.625 - 0.5 at 64 (centres at integers).
    np.testing.assert_allclose(landmarks[0, 0], [64.5 / 4 - 0.5, 128.5 / 4 - 0.5])
    assert int(clip[0, 0, 0, 0]) == 10


def _face_mesh_or_skip() -> None:
    if (why := face_mesh.unavailable_reason()) is not None:
        pytest.skip(why)


def _first_real_clip(person: str) -> Path:
    rows = folders.read_people(REAL_FACES / "MANIFEST.tsv")
    return REAL_FACES / min(f for f, p in rows.items() if p == person)


@pytest.mark.skipif(not REAL_FACES.is_dir(), reason="../shared/data/real_faces is missing")
def test_teacher_landmarks_mirror_like_the_synthetic_heads():
    """Flip augmentation mirrors landmarks with `synthetic.MIRRORED_LANDMARKS`: the teacher
    landmarks of a mirrored face must be the mirrored landmarks of the face."""
    from data_pipelines import synthetic, video_io

    _face_mesh_or_skip()
    frame = video_io.resize_frames(video_io.read_video(_first_real_clip("p29"), 1),
                                   face_mesh.FRAME_SIZE)[0]
    plain = face_mesh.teacher_landmarks(face_mesh.default_landmarker().landmarks(frame))
    mirrored = face_mesh.teacher_landmarks(face_mesh.default_landmarker().landmarks(
        np.ascontiguousarray(frame[:, ::-1])))
    expected = plain[list(synthetic.MIRRORED_LANDMARKS)] * np.array([-1, 1]) + [256, 0]
    assert np.abs(mirrored - expected).mean() < 3.0
    names = synthetic.LANDMARK_NAMES
    assert plain[names.index("left_eye"), 0] < plain[names.index("right_eye"), 0]
    assert plain[names.index("forehead"), 1] < plain[names.index("nose_tip"), 1] \
        < plain[names.index("chin"), 1]


@pytest.mark.skipif(not REAL_FACES.is_dir(), reason="../shared/data/real_faces is missing")
def test_prepare_real_faces_by_person_with_landmarks(tmp_path):
    """Two people's clips (one held out by the hash of its person): prepare --track-faces
    gives person#clip#k videos with landmarks on every frame, id_sampling by person."""
    from data_pipelines.sources import PairSource
    from data_pipelines.tfds_builder import TfdsVideosWithLandmarks, open_prepared

    _face_mesh_or_skip()
    root = tmp_path / "clips"
    root.mkdir()
    rows = []
    for person in ("p29", "p33", "p61"):  # p61 is a test person (hash), p29, p33 train
        clip = _first_real_clip(person)
        (root / clip.name).symlink_to(clip)
        rows.append((clip.name, person))
    manifest = _write_manifest(tmp_path / "m.tsv", rows)
    out = tmp_path / "out"
    prepare.main(["--videos", str(root), "--out", str(out), "--size", "32", "--track-faces",
                  "--manifest", str(manifest), "--max-frames", "20",
                  "--min-track-frames", "8"])
    test = open_prepared(out, "test")
    train = open_prepared(out, "train")
    assert isinstance(test, TfdsVideosWithLandmarks)
    assert {test.name(v).split("#")[0] for v in range(len(test))} == {"p61"}
    assert {train.name(v).split("#")[0] for v in range(len(train))} == {"p29", "p33"}
    points = train.landmarks(0, range(train.num_frames(0)))
    assert points.shape == (train.num_frames(0), 13, 2)
    assert np.isfinite(points).all() and (points > 0).all() and (points < 32).all()
    pairs = PairSource(train, id_sampling=True)
    assert len(pairs) == 2  # one group per person
    record = pairs[0]
    assert record["driving_landmarks"].shape == (13, 2)


def test_landmark_teachers_accept_prepared_data_and_refuse_data_without_landmarks():
    from types import SimpleNamespace

    from asrth_jax.config_lib import base_config
    from asrth_jax.errors import ConfigError
    from asrth_jax.teachers import check_headpose_teacher
    from asrth_jax.train_step import TrainSetup

    config = base_config()
    config.loss.landmark_keypoints = 10.0
    check_headpose_teacher(config.loss, "tfds")  # prepared with --track-faces
    with pytest.raises(ValueError, match="--track-faces"):
        check_headpose_teacher(config.loss, "vox")
    # A training batch (it has record keys) without the landmarks: one line, no KeyError
    # deep in the traced loss.
    setup = SimpleNamespace(config=config, defs=SimpleNamespace(pose_from_data=False))
    images = np.zeros((2, 8, 8, 3), np.float32)
    batch = {"source": images, "source_lq": images, "driving": images,
             "record_key": np.arange(2)}
    with pytest.raises(ConfigError, match="no 'driving_landmarks'.*--track-faces"):
        TrainSetup.shard_batch(setup, batch)


def test_real_small_states_its_recipe_and_needs_no_weight_file():
    """configs/real_small.py (README "Real faces" recipe table): the paper's
    equivariance, keypoint prior and expression terms; no HopeNet offline, so pose off;
    the face-mesh landmark teachers (non-paper) from prepared data; nothing only the
    synthetic renderer knows; no file needed."""
    from asrth_jax.config_lib import load_config_file
    from asrth_jax.teachers import check_teachers

    root = Path(__file__).resolve().parents[1]
    config = load_config_file(str(root / "configs" / "real_small.py"))
    loss = config.loss
    assert config.data.kind == "tfds" and config.data.id_sampling and config.image_size == 64
    assert loss.equivariance_value and loss.keypoint_prior and loss.expression
    assert loss.headpose == 0 and loss.head_translation == 0 and loss.background_motion == 0
    assert loss.landmark_keypoints and loss.landmark_motion
    assert loss.perceptual_network == "lpips_vgg16" and loss.generator_gan == 0
    check_teachers(loss, "tfds")  # needs no weight file
