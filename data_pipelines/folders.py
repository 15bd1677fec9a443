"""Raw video folders: FOMM/VoxCeleb (root/train, root/test) and HDTF-style flat folders.

A flat folder is split per identity by a hash (``split_of``), so the split of a clip
never depends on which other clips are present.

Reading raw clips decodes whole videos, so decoded clips are kept in a small
per-process LRU cache; for large datasets run ``data_pipelines.prepare`` once and
read the TFDS/ArrayRecord copy instead (random access to single frames).
"""

from __future__ import annotations

import csv
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_pipelines import video_io
from data_pipelines.errors import AsrthError, ConfigError, DatasetNotFoundError, prepare_hint
from data_pipelines.sources import identity_of


class ManifestError(AsrthError, ValueError):
    """A people manifest that cannot be used, or a clip it lacks (one line and the fix)."""


def split_of(name: str, train_fraction: float = 0.8) -> str:
    """'train' or 'test' for a clip of a flat folder, fixed by its identity alone.

    A hash of the identity (``identity_of``: the VoxCeleb ``id`` before '#', else the
    whole clip name) places it, so adding, removing or failing to decode other clips
    never moves it, and the clips of one identity never straddle the two splits.
    """
    if not 0.0 <= train_fraction <= 1.0:
        raise ConfigError(f"train_fraction must be in [0, 1], got {train_fraction}")
    digest = hashlib.sha256(identity_of(name).encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    return "train" if position < train_fraction else "test"


def read_people(manifest: str | Path) -> dict[str, str]:
    """File name -> person from a tab-separated manifest with `file` and `person_id`
    columns (`real_faces/MANIFEST.tsv`); bad files raise a one-line ManifestError."""
    path = Path(manifest)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; pass the TSV that gives each "
                            "clip's person_id")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = {"file", "person_id"} - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"manifest {path} lacks the column(s) {sorted(missing)}; it "
                                "needs a tab-separated header with 'file' and 'person_id'")
        people = {row["file"]: row["person_id"].strip() for row in reader}
    if bad := [f for f, person in people.items() if not person or "#" in person]:
        raise ManifestError(f"manifest {path}: clip {bad[0]} has an empty person_id or one "
                            "with '#'")
    return people


def clip_name(path: Path, people: dict[str, str] | None = None) -> str:
    """A clip's dataset name: `person#clip` when `people` (file name -> person) is given,
    so `identity_of` (hence the split and id_sampling) reads the person; else its name."""
    name = video_io.video_name(path)
    if people is None:
        return name
    if path.name not in people:
        raise ManifestError(f"{path.name} is not in the manifest; add a row with its "
                            "person_id or move the clip out of --videos")
    return f"{people[path.name]}#{name}"


def has_split_folders(root: str | Path) -> bool:
    return (Path(root) / "train").is_dir() or (Path(root) / "test").is_dir()


def assign_splits(root: str | Path, train_fraction: float = 0.8,
                  people: dict[str, str] | None = None) -> dict[str, list[Path]]:
    """Videos per split under ``root``: root/train and root/test if either exists, else
    each clip of the flat folder by ``split_of`` of its person (``people``: file name ->
    person, e.g. `read_people`; else its name). A split may come back empty."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"dataset folder {root} does not exist; set config.data.root to a folder of videos "
            f"or build one with: {prepare_hint(str(root))}"
        )
    if has_split_folders(root):
        return {split: video_io.list_videos(root / split) if (root / split).is_dir() else []
                for split in ("train", "test")}
    splits: dict[str, list[Path]] = {"train": [], "test": []}
    for path in video_io.list_videos(root):
        splits[split_of(clip_name(path, people), train_fraction)].append(path)
    return splits


def empty_split_fix(root: str | Path, split: str, train_fraction: float) -> str:
    """Why ``split`` of ``root`` is empty and how to fill it, for one-line errors."""
    root = Path(root)
    if has_split_folders(root):
        return (f"{root}/{split} holds no videos (expected .mp4 files or frame folders); "
                f"put {split} clips there")
    total = len(video_io.list_videos(root))
    if total == 0:
        return (f"{root} holds no videos (expected .mp4 files or frame folders, optionally "
                "in train/ and test/); add videos or fix the folder")
    change = "lower" if split == "test" else "raise"
    return (f"none of the {total} videos in {root} falls in the {split} split (clips are "
            f"placed by a hash of their identity, train fraction {train_fraction}); put "
            f"held-out clips in {root}/test and the rest in {root}/train, or {change} the "
            "train fraction")


def split_videos(root: str | Path, split: str, train_fraction: float = 0.8) -> list[Path]:
    """Videos of ``split`` under ``root`` (see ``assign_splits``); an empty split is an error."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    videos = assign_splits(root, train_fraction)[split]
    if not videos:
        raise DatasetNotFoundError(
            f"no videos for split {split!r}: {empty_split_fix(root, split, train_fraction)}; "
            "or fix config.data.root")
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
