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


def test_heads_travel_visibly_and_stay_in_the_frame():
    """The demo's motion must be larger than a CPU model's few-pixel blur: over a clip
    the head centre strays on average 8+ px (of 64) from where frame 0 has it (the
    earlier, half-size amplitudes gave 5.3), while no landmark leaves the frame and no
    head pixel touches its border."""
    size, frames = 64, 64
    travel = []
    for seed in synthetic.identity_seeds("test", 16):
        centres = np.stack([synthetic.centre_pixels(synthetic.frame_state(seed, t)[1], size)
                            for t in range(frames)])
        travel.append(np.linalg.norm(centres - centres[0], axis=1).max())
        landmarks = synthetic.render_video(seed, frames, size)[2]
        assert ((landmarks >= 0) & (landmarks <= size - 1)).all()
        masks = np.stack([synthetic.head_mask(seed, t, size) for t in range(frames)])
        assert not (masks[:, [0, -1], :].any() or masks[:, :, [0, -1]].any())
    assert np.mean(travel) > 8.0


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
    assert r["frame_index"][0] <= r["frame_index"][1]  # sorted: the earlier is the source
    np.testing.assert_array_equal(src[5]["source"], r["source"])
    # next epoch of the same record draws other frames (usually)
    picks = {tuple(src.pick(5 + e * len(src))[1:]) for e in range(6)}
    assert len(picks) > 1
    pose, lm = videos.pose_and_landmarks(0, 2)
    assert pose.shape == (3,) and lm.shape[1] == 2


def test_true_pose_uses_the_models_rotation_convention():
    """The renderer's pose must mean what the head-pose estimator's angles mean, or the
    true pose could not teach it (the model converts degrees with 3.14, hence 2e-3)."""
    from asrth_jax.models.head_pose import rotation_matrix

    for yaw, pitch, roll in [(25.0, -12.0, 8.0), (-18.0, 9.0, -6.0)]:
        ours = synthetic.rotation_matrix(yaw, pitch, roll)
        model = np.asarray(rotation_matrix(np.array([yaw]), np.array([pitch]),
                                           np.array([roll]))[0])
        np.testing.assert_allclose(ours, model, atol=2e-3)


def test_pair_records_carry_the_true_pose_of_both_frames():
    videos = synthetic.SyntheticVideos(synthetic.identity_seeds("train", 3), 16, 32)
    r = PairSource(videos, seed=2)[1]
    src, drv = (int(t) for t in r["frame_index"])
    np.testing.assert_allclose(r["source_pose"], synthetic.frame_state(videos.identities[1],
                                                                       src)[0], rtol=1e-6)
    np.testing.assert_array_equal(r["driving_pose"], videos.head_poses(1, [drv])[0])
    assert r["driving_pose"].dtype == np.float32 and r["driving_pose"].shape == (3,)


def test_head_centre_is_where_the_head_turns_about_in_the_keypoint_frame():
    """The centre is the point the renderer rotates the landmark template about (its
    origin): at zero rotation the nose tip (template x 0, y 0.12) sits on it in x and
    0.12 head heights below it; the frame's corners are -1 and 1."""
    seed, size = synthetic.identity_seeds("train", 1)[0], 64
    _, trans, _, _ = synthetic.frame_state(seed, 5)
    to_pixels = (synthetic.head_centre(trans, size) + 1.0) * (size - 1) / 2.0
    nose = synthetic.project_landmarks(seed, np.zeros(3), trans, size)[4]
    head_h = synthetic.make_identity(seed).head_h
    np.testing.assert_allclose(nose, to_pixels + [0.0, 0.12 * head_h * size], atol=1e-4)
    np.testing.assert_allclose(synthetic.head_centre(np.array([-0.5, -0.52]), size), [-1, -1])
    videos = synthetic.SyntheticVideos([seed], 16, size)
    r = PairSource(videos, seed=2)[0]
    src, drv = (int(t) for t in r["frame_index"])
    np.testing.assert_array_equal(r["driving_centre"], videos.head_centres(0, [drv])[0])
    np.testing.assert_array_equal(r["source_centre"], videos.head_centres(0, [src])[0])


def test_flips_move_the_true_pose_with_the_frames():
    """Mirroring turns yaw and roll the other way; a time flip swaps the two poses."""
    import ml_collections

    from data_pipelines.augment import AugmentPair

    image = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    record = {"source": image, "driving": image + 1, "frame_index": np.array([3, 7]),
              "source_pose": np.array([10.0, 5.0, -2.0], np.float32),
              "driving_pose": np.array([-4.0, 1.0, 3.0], np.float32),
              "source_centre": np.array([0.1, 0.2], np.float32),
              "driving_centre": np.array([-0.3, 0.05], np.float32)}

    def augment(flip: bool, time_flip: bool) -> dict:
        cfg = ml_collections.ConfigDict(dict(flip=flip, time_flip=time_flip, brightness=0.0,
                                             contrast=0.0, saturation=0.0, hue=0.0))
        rng = np.random.default_rng(0)
        while True:  # a seed where the enabled flips fire
            out = AugmentPair(cfg).random_map(record, np.random.default_rng(rng.integers(1e9)))
            mirrored = np.array_equal(out["source"][:, 0], record["source"][:, 1]) or \
                np.array_equal(out["source"][:, 0], record["driving"][:, 1])
            swapped = out["frame_index"][0] == 7
            if mirrored == flip and swapped == time_flip:
                return out

    out = augment(flip=True, time_flip=False)
    np.testing.assert_array_equal(out["source_pose"], [-10.0, 5.0, 2.0])
    np.testing.assert_array_equal(out["driving_pose"], [4.0, 1.0, -3.0])
    np.testing.assert_array_equal(out["source_centre"], np.float32([-0.1, 0.2]))
    np.testing.assert_array_equal(out["driving_centre"], np.float32([0.3, 0.05]))
    out = augment(flip=False, time_flip=True)
    np.testing.assert_array_equal(out["source_pose"], record["driving_pose"])
    np.testing.assert_array_equal(out["driving_pose"], record["source_pose"])
    np.testing.assert_array_equal(out["driving_centre"], record["source_centre"])


def _flipped(record: dict, *, flip: bool, time_flip: bool) -> dict:
    """The record through `AugmentPair` with only the named flip on, at the first seed
    where it fires (the frames change)."""
    import ml_collections

    from data_pipelines.augment import AugmentPair

    cfg = ml_collections.ConfigDict(dict(flip=flip, time_flip=time_flip, brightness=0.0,
                                         contrast=0.0, saturation=0.0, hue=0.0))
    rng = np.random.default_rng(0)
    while True:
        out = AugmentPair(cfg).random_map(record, np.random.default_rng(rng.integers(1e9)))
        if not np.array_equal(out["source"], record["source"]):
            return out


def test_pair_records_carry_the_true_landmarks_and_mirroring_keeps_left_on_the_left():
    """Records carry both frames' landmark pixels; a mirrored pair's landmarks are the
    mirrored frames' (x -> width - 1 - x, left and right swapped), so landmark k names
    the same part of the face before and after (what `loss.landmark_keypoints` needs)."""


    size = 64
    videos = synthetic.SyntheticVideos(synthetic.identity_seeds("train", 3), 40, size)
    record = PairSource(videos, seed=2)[1]
    src, drv = (int(t) for t in record["frame_index"])
    np.testing.assert_array_equal(record["source_landmarks"], videos.landmarks(1, [src])[0])
    np.testing.assert_array_equal(record["driving_landmarks"], videos.landmarks(1, [drv])[0])
    assert record["driving_landmarks"].dtype == np.float32
    out = _flipped(record, flip=True, time_flip=False)
    names = synthetic.LANDMARK_NAMES
    for key in ("source_landmarks", "driving_landmarks"):
        before, after = record[key], out[key]
        for k, name in enumerate(names):
            twin = names.index(name.replace("left", "@").replace("right", "left")
                               .replace("@", "right"))
            np.testing.assert_allclose(after[k], [size - 1 - before[twin][0], before[twin][1]],
                                       rtol=1e-6)
        left, right = names.index("left_eye"), names.index("right_eye")
        assert (after[left][0] < after[right][0]) == (before[left][0] < before[right][0])


def test_pair_records_carry_the_moving_mask_and_flips_keep_it_on_the_heads():
    """`moving_mask` is the union of both frames' head masks; a mirror mirrors it, a
    time flip (source and driving swapped) leaves it as it is."""


    videos = synthetic.SyntheticVideos(synthetic.identity_seeds("train", 3), 40, 64)
    record = PairSource(videos, seed=2)[1]
    src, drv = (int(t) for t in record["frame_index"])
    heads = videos.head_masks(1, [src, drv])
    assert src != drv and not np.array_equal(heads[0], heads[1])
    np.testing.assert_array_equal(record["moving_mask"], heads[0] | heads[1])
    for flip, time_flip in ((True, False), (False, True)):
        out = _flipped(record, flip=flip, time_flip=time_flip)
        expected = record["moving_mask"][:, ::-1] if flip else record["moving_mask"]
        np.testing.assert_array_equal(out["moving_mask"], expected)
        # the mask still covers exactly where the (flipped) frames differ from background
        changed = (out["source"] != out["driving"]).any(-1)
        assert not (changed & ~out["moving_mask"]).any()


def test_head_mask_is_every_pixel_that_is_not_background():
    """The motion metrics' moving region: the mask covers exactly the pixels the head
    changes (anything else is the untouched background texture), and it moves."""
    size = 64
    background = np.clip(synthetic._textures(3, size)[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    masks = []
    for t in (0, 7, 19):
        frame = synthetic.render_frame(3, t, size)[0]
        mask = synthetic.head_mask(3, t, size)
        assert mask.dtype == bool and mask.shape == (size, size)
        np.testing.assert_array_equal(mask, (frame != background).any(axis=-1))
        masks.append(mask)
    assert 0.2 < masks[0].mean() < 0.6
    assert (masks[0] != masks[2]).sum() > 10


def test_eval_ground_truth_is_deterministic_and_matches_the_render():
    videos = synthetic.SyntheticVideos(synthetic.identity_seeds("test", 2), 16, 32)
    lms = videos.landmarks(1, [0, 5, 9])
    assert lms.shape == (3, len(synthetic.LANDMARK_NAMES), 2) and lms.dtype == np.float32
    np.testing.assert_array_equal(lms[1], synthetic.render_frame(videos.identities[1], 5,
                                                                 32)[2])
    again = synthetic.SyntheticVideos(synthetic.identity_seeds("test", 2), 16, 32)
    np.testing.assert_array_equal(again.landmarks(1, [0, 5, 9]), lms)
    masks = videos.head_masks(1, [0, 5])
    assert masks.shape == (2, 32, 32) and masks.dtype == bool
    np.testing.assert_array_equal(masks, again.head_masks(1, [0, 5]))
    np.testing.assert_array_equal(masks[1], synthetic.head_mask(videos.identities[1], 5, 32))
