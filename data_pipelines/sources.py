"""Grain random-access sources of (source, driving) frame pairs.

A *video collection* (raw folders, a prepared TFDS dataset or the synthetic
renderer) knows how many videos it has and reads chosen frames of one video.
``PairSource`` turns any collection into Grain's RandomAccessDataSource: record
``index`` picks a video (or, with ``id_sampling``, an identity first and then one
of its videos, FOMM's rule that stops identities with many clips from dominating)
and two frames of it (drawn with replacement and sorted: the earlier one is the
source, as in the reference). Every choice is drawn from a generator seeded by
(seed, epoch, record) so any record can be re-read identically in any process.
``index`` may exceed ``len(source)``: ``epoch = index // len`` gives a fresh draw
per epoch while ``len`` stays one epoch (``num_repeats`` passes over the videos,
FOMM's DatasetRepeater).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from data_pipelines.errors import DataError


class VideoCollection(Protocol):
    """What PairSource needs from a set of videos."""

    def __len__(self) -> int: ...

    def num_frames(self, video: int) -> int: ...

    def read_frames(self, video: int, frame_indices: Sequence[int]) -> np.ndarray:
        """uint8 (len(frame_indices), H, W, 3) RGB."""
        ...

    def name(self, video: int) -> str: ...

    # Optional: collections that know each frame's true head pose (synthetic data) also
    # define `head_poses(video, frame_indices) -> float32 (N, 3)` yaw, pitch, roll degrees.


def identity_of(name: str) -> str:
    """VoxCeleb names are ``id#ytid#start#end``; the identity is the part before '#'."""
    return name.split("#", 1)[0]


def record_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Independent, reproducible stream per (seed, epoch, record)."""
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]))


class PairSource:
    """One record = two frames of one video (grain RandomAccessDataSource protocol)."""

    def __init__(
        self,
        videos: VideoCollection,
        *,
        seed: int = 0,
        num_repeats: int = 1,
        id_sampling: bool = False,
        max_frame_distance: int | None = None,
    ):
        if len(videos) == 0:
            raise DataError("PairSource got an empty video collection; check the dataset path")
        self.videos = videos
        self.seed = int(seed)
        self.num_repeats = int(num_repeats)
        self.max_frame_distance = max_frame_distance
        if id_sampling:
            groups: dict[str, list[int]] = {}
            for v in range(len(videos)):
                groups.setdefault(identity_of(videos.name(v)), []).append(v)
            self._groups = [groups[k] for k in sorted(groups)]
        else:
            self._groups = [[v] for v in range(len(videos))]

    def __len__(self) -> int:
        return len(self._groups) * self.num_repeats

    def __repr__(self) -> str:
        return (f"PairSource(groups={len(self._groups)}, repeats={self.num_repeats}, "
                f"seed={self.seed})")

    def pick(self, index: int) -> tuple[int, int, int]:
        """(video, source frame, driving frame) of record ``index`` (any epoch)."""
        epoch, record = divmod(int(index), len(self))
        rng = record_rng(self.seed, epoch, record)
        group = self._groups[record % len(self._groups)]
        video = group[int(rng.integers(len(group)))]
        n = self.videos.num_frames(video)
        if n < 1:
            raise DataError(f"video {self.videos.name(video)!r} has no frames; remove it or "
                            "re-run data_pipelines.prepare")
        if self.max_frame_distance:
            # Our option, not the reference's: the second frame within d of the first.
            first = int(rng.integers(n))
            d = self.max_frame_distance
            second = int(rng.integers(max(0, first - d), min(n, first + d + 1)))
            pair = (first, second)
        else:
            # The reference: two indices with replacement (the same frame is possible).
            pair = rng.integers(n, size=2)
        # Sorted, the earlier frame is the source; the time flip reverses half the pairs.
        src, drv = sorted(int(i) for i in pair)
        return video, src, drv

    def __getitem__(self, index: int) -> dict[str, Any]:
        video, src, drv = self.pick(index)
        frames = self.videos.read_frames(video, [src, drv])
        record = {
            "source": frames[0],
            "driving": frames[1],
            "video_index": np.int32(video),
            "frame_index": np.array([src, drv], np.int32),
            "record_key": np.int64(int(index) % len(self)),
        }
        if hasattr(self.videos, "head_poses"):
            record["source_pose"], record["driving_pose"] = self.videos.head_poses(
                video, [src, drv])
        if hasattr(self.videos, "head_centres"):
            record["source_centre"], record["driving_centre"] = self.videos.head_centres(
                video, [src, drv])
        if hasattr(self.videos, "landmarks"):
            record["source_landmarks"], record["driving_landmarks"] = (
                self.videos.landmarks(video, [src, drv]).astype(np.float32))
        if hasattr(self.videos, "head_masks"):
            # Every pixel the head covers in either frame; the rest is static background.
            record["moving_mask"] = np.logical_or(*self.videos.head_masks(video, [src, drv]))
        return record
