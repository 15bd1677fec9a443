"""Raw video folders: FOMM/VoxCeleb (root/train, root/test) and HDTF-style flat folders.

Reading raw clips decodes whole videos, so decoded clips are kept in a small
per-process LRU cache; for large datasets run ``data_pipelines.prepare`` once and
read the TFDS/ArrayRecord copy instead (random access to single frames).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_pipelines import video_io
from data_pipelines.errors import DatasetNotFoundError, prepare_hint


def split_videos(root: str | Path, split: str, train_fraction: float = 0.8) -> list[Path]:
    """Videos of ``split`` under ``root``: root/<split> if present, else a seeded 80/20 split."""
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"dataset folder {root} does not exist; set config.data.root to a folder of videos "
            f"or build one with: {prepare_hint(str(root))}"
        )
    if (root / "train").is_dir() or (root / "test").is_dir():
        sub = root / split
        videos = video_io.list_videos(sub) if sub.is_dir() else []
    else:
        everything = video_io.list_videos(root)
        order = np.random.default_rng(0).permutation(len(everything))
        n_train = len(everything) if len(everything) < 2 else min(
            len(everything) - 1, max(1, round(train_fraction * len(everything))))
        chosen = order[:n_train] if split == "train" else order[n_train:]
        videos = sorted((everything[i] for i in chosen), key=lambda p: p.name)
    if not videos:
        raise DatasetNotFoundError(
            f"no videos found for split {split!r} in {root} (expected .mp4 files or frame "
            "folders, optionally in train/ and test/); add videos or fix config.data.root"
        )
    return videos


class FolderVideos:
    """VideoCollection over video files / frame folders, resized to ``size``."""

    def __init__(self, paths: Sequence[Path], size: int, max_frames: int = 0,
                 cache_size: int = 8):
        self.paths = [Path(p) for p in paths]
        self.size = int(size)
        self.max_frames = int(max_frames) or None
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._num_frames: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, video: int) -> str:
        return video_io.video_name(self.paths[video])

    def _frames(self, video: int) -> np.ndarray:
        if video in self._cache:
            self._cache.move_to_end(video)
            return self._cache[video]
        frames = video_io.resize_frames(
            video_io.read_video(self.paths[video], self.max_frames), self.size)
        self._num_frames[video] = len(frames)
        self._cache[video] = frames
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return frames

    def num_frames(self, video: int) -> int:
        if video not in self._num_frames:
            path = self.paths[video]
            if path.is_dir():
                n = len(video_io.frame_files(path))
                self._num_frames[video] = min(n, self.max_frames or n)
            else:
                self._frames(video)
        return self._num_frames[video]

    def read_frames(self, video: int, frame_indices: Sequence[int]) -> np.ndarray:
        path = self.paths[video]
        if path.is_dir():  # frame folders are random access already: read only what we need
            files = video_io.frame_files(path)
            frames = np.stack([video_io.read_image(files[i]) for i in frame_indices])
            return video_io.resize_frames(frames, self.size)
        return self._frames(video)[list(frame_indices)]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()  # never ship decoded clips to worker processes
        return state
