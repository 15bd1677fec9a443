"""Synthetic talking heads: shapes, ground truth, determinism, identity split."""

import numpy as np

from data_pipelines import synthetic
from data_pipelines.sources import PairSource


def test_render_video_shapes_and_ground_truth():
    frames, pose, lms = synthetic.render_video(3, 12, 64)
    assert frames.shape == (12, 64, 64, 3) and frames.dtype == np.uint8
    assert pose.shape == (12, 3) and lms.shape == (12, len(synthetic.LANDMARK_NAMES), 2)
    assert np.abs(pose).max() < 45
    assert (lms > 0).all() and (lms < 64).all()
    # the head moves and the mouth/eyes change: consecutive frames differ
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 0.5
    assert np.ptp(pose[:, 0]) > 1.0


def test_deterministic_and_identities_differ():
    a = synthetic.render_video(5, 3, 64)[0]
    b = synthetic.render_video(5, 3, 64)[0]
    c = synthetic.render_video(6, 3, 64)[0]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_train_test_identities_disjoint():
    train = set(synthetic.identity_seeds("train", 500))
    test = set(synthetic.identity_seeds("test", 50))
    assert not train & test


def test_pair_source_records():
    videos = synthetic.SyntheticVideos(synthetic.identity_seeds("train", 4), 16, 32)
    src = PairSource(videos, seed=1, num_repeats=3)
    assert len(src) == 12
    r = src[5]
    assert r["source"].shape == (32, 32, 3) and r["driving"].shape == (32, 32, 3)
    assert r["frame_index"][0] != r["frame_index"][1]
    np.testing.assert_array_equal(src[5]["source"], r["source"])
    # next epoch of the same record draws other frames (usually)
    picks = {tuple(src.pick(5 + e * len(src))[1:]) for e in range(6)}
    assert len(picks) > 1
    pose, lm = videos.pose_and_landmarks(0, 2)
    assert pose.shape == (3,) and lm.shape[1] == 2
