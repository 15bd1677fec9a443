"""TFDS dataset of prepared talking-head clips (ArrayRecord, random access).

One example = one video: its name, its frames as a sequence of JPEG/PNG encoded
images and its frame count. ArrayRecord gives random access to any video, and we
parse the stored example without decoding its images so a training pair decodes
exactly two frames. The builder reads the per-video cache written by
``data_pipelines.prepare`` (its manual dir), never the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import example_parser

from data_pipelines import video_io
from data_pipelines.errors import DatasetNotFoundError, prepare_hint

DEFAULT_NAME = "talking_head_frames"


def cache_filename(video: str) -> str:
    """File name of a video's cache entry (names are unique within a split)."""
    return video.replace("/", "_") + ".npz"


def save_cached_video(path: Path, frames_encoded: Sequence[bytes],
                      landmarks: np.ndarray | None = None) -> None:
    """Per-video cache: encoded frames concatenated + offsets (no pickle needed), and the
    frames' (T, L, 2) face landmarks where prepare found them."""
    offsets = np.cumsum([0] + [len(b) for b in frames_encoded]).astype(np.int64)
    blob = np.frombuffer(b"".join(frames_encoded), np.uint8)
    extra = {} if landmarks is None else {"landmarks": np.asarray(landmarks, np.float32)}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, blob=blob, offsets=offsets, **extra)
    tmp.replace(path)  # atomic: an interrupted run never leaves a half-written cache file


def load_cached_video(path: Path) -> list[bytes]:
    with np.load(path) as data:
        blob, offsets = data["blob"].tobytes(), data["offsets"]
    return [blob[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def load_cached_landmarks(path: Path) -> np.ndarray | None:
    """The (T, L, 2) landmarks a cache entry holds, or None."""
    with np.load(path) as data:
        return data["landmarks"] if "landmarks" in data.files else None


def landmarks_file(tfds_dir: str | Path, split: str) -> Path:
    """Where prepare stores a split's face landmarks (one (T, L, 2) array per video
    name) beside the TFDS dataset: `<--out>/landmarks/<split>.npz`."""
    return Path(tfds_dir) / "landmarks" / f"{split}.npz"


class TalkingHeadFramesConfig(tfds.core.BuilderConfig):
    """Frame size and encoding (they fix the Image feature's shape and format)."""

    def __init__(self, *, size: int, frame_format: str = "jpeg", **kwargs: Any):
        super().__init__(name=f"{size}_{frame_format}", **kwargs)
        self.size = size
        self.frame_format = frame_format


class TalkingHeadFrames(tfds.core.GeneratorBasedBuilder):
    """Face-cropped talking-head clips as encoded frame sequences."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [TalkingHeadFramesConfig(size=256), TalkingHeadFramesConfig(size=512)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Nothing is downloaded. Put VoxCeleb/HDTF videos (.mp4 or frame folders, optionally in "
        "train/ and test/) in a folder and run: " + prepare_hint()
    )

    # tfds derives code_path through the optional `importlib_resources` package, which
    # this environment lacks; the module file is the right answer and needs nothing.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description="Talking-head clips, one example per video, frames encoded.",
            features=tfds.features.FeaturesDict(
                {
                    "video": tfds.features.Text(),
                    "frames": tfds.features.Sequence(
                        tfds.features.Image(shape=(cfg.size, cfg.size, 3),
                                            encoding_format=cfg.frame_format)
                    ),
                    "num_frames": np.int32,
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        cache = Path(dl_manager.manual_dir)
        manifest = json.loads((cache / "manifest.json").read_text())
        return {
            split: self._generate_examples(cache / split, names)
            for split, names in manifest["splits"].items()
            if names
        }

    def _generate_examples(self, folder: Path, names: Sequence[str]) -> Iterator[tuple[str, dict]]:
        for name in names:
            frames = load_cached_video(folder / cache_filename(name))
            yield name, {"video": name, "frames": frames, "num_frames": len(frames)}


def find_prepared(tfds_dir: str | Path, name: str = DEFAULT_NAME) -> Path:
    """Version folder of the prepared dataset under ``tfds_dir`` (= prepare's --out)."""
    root = Path(tfds_dir)
    infos = sorted(root.glob(f"**/{name}/*/*/dataset_info.json")) + sorted(
        root.glob("dataset_info.json"))
    if not infos:
        raise DatasetNotFoundError(
            f"no prepared dataset {name!r} under {root}; create it with: "
            f"{prepare_hint(out=str(root))}"
        )
    return infos[-1].parent


class TfdsVideos:
    """VideoCollection reading a prepared split; decodes only the requested frames."""

    def __init__(self, tfds_dir: str | Path, split: str, name: str = DEFAULT_NAME):
        self.path = find_prepared(tfds_dir, name)
        self.split = split
        builder = tfds.builder_from_directory(str(self.path))
        if split not in builder.info.splits:
            raise DatasetNotFoundError(
                f"prepared dataset {self.path} has no {split!r} split; add {split} videos and "
                f"re-run: {prepare_hint(out=str(tfds_dir))}"
            )
        self._source = builder.as_data_source(split)
        self._parser = example_parser.ExampleParserNp(
            builder.info.features.get_serialized_info())
        self._num_frames: dict[int, int] = {}
        self._names: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._source)

    def _raw(self, video: int) -> dict[str, Any]:
        example = self._parser.parse_example(self._source.data_source[video])
        self._num_frames[video] = int(example["num_frames"])
        name = example["video"]
        self._names[video] = name.decode() if isinstance(name, bytes) else str(name)
        return example

    def num_frames(self, video: int) -> int:
        if video not in self._num_frames:
            self._raw(video)
        return self._num_frames[video]

    def name(self, video: int) -> str:
        if video not in self._names:
            self._raw(video)
        return self._names[video]

    def read_frames(self, video: int, frame_indices: Sequence[int]) -> np.ndarray:
        frames = self._raw(video)["frames"]
        return np.stack([video_io.decode_frame(frames[i]) for i in frame_indices])


class TfdsVideosWithLandmarks(TfdsVideos):
    """A prepared split whose frames carry face landmarks (prepare --track-faces): every
    pair then holds `source_landmarks` / `driving_landmarks`, which the landmark teachers
    (`config.loss.landmark_keypoints`, `landmark_motion`) read."""

    def __init__(self, tfds_dir: str | Path, split: str, name: str = DEFAULT_NAME):
        super().__init__(tfds_dir, split, name)
        with np.load(landmarks_file(tfds_dir, split)) as data:
            self._landmarks = {key: data[key] for key in data.files}

    def landmarks(self, video: int, frame_indices: Sequence[int]) -> np.ndarray:
        """(len(frame_indices), L, 2) landmark pixels (x, y; pixel centres at integers)."""
        name = self.name(video)
        if name not in self._landmarks:
            raise DatasetNotFoundError(
                f"{landmarks_file('<tfds_dir>', self.split)} has no landmarks for video "
                f"{name!r}; re-run data_pipelines.prepare with --track-faces")
        return self._landmarks[name][list(frame_indices)]


def open_prepared(tfds_dir: str | Path, split: str, name: str = DEFAULT_NAME) -> TfdsVideos:
    """A prepared split, with its face landmarks where prepare stored them."""
    if landmarks_file(tfds_dir, split).is_file():
        return TfdsVideosWithLandmarks(tfds_dir, split, name)
    return TfdsVideos(tfds_dir, split, name)
