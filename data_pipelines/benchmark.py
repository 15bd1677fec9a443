"""Single-core throughput of the data path: pairs/s and where the time goes.

    python -m data_pipelines.benchmark --sizes 256 512 --presets none downsample realesrgan2
    python -m data_pipelines.benchmark --source tfds --tfds-dir OUT --sizes 256

Runs read -> augment -> degrade on one core (OpenCV threads pinned to 1) so the
number is "pairs per second per CPU core"; multiply by worker processes to size
a host. Every ``--batch-size`` pairs share the degradation's once-per-batch choices,
as the pairs of a training batch do. ``--source jpeg`` (default) decodes in-memory
JPEG frames of synthetic heads, which costs what reading a prepared TFDS dataset costs
minus the disk.
Prints one JSON object (and writes it to --out if given). ``pairs_per_s_per_core`` is
from the process's CPU time, so it stays meaningful on a shared, loaded machine (the
JSON carries the load average); ``pairs_per_s_wall`` is what this run saw.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from data_pipelines import synthetic, video_io
from data_pipelines.augment import AugmentPair
from data_pipelines.config import default_data_config
from data_pipelines.degradation import DegradeSource, default_degradation_config
from data_pipelines.degradation_config import PRESETS
from data_pipelines.errors import DatasetNotFoundError, fail
from data_pipelines.sources import PairSource

MIN_SIZE, MAX_SIZE = 32, 4096


class _JpegVideos:
    """In-memory JPEG clips (like a prepared dataset without the disk)."""

    def __init__(self, size: int, num_videos: int = 4, num_frames: int = 16):
        self.clips = [[video_io.encode_frame(f) for f in synthetic.render_video(v, num_frames,
                                                                                 size)[0]]
                      for v in range(num_videos)]

    def __len__(self) -> int:
        return len(self.clips)

    def num_frames(self, video: int) -> int:
        return len(self.clips[video])

    def name(self, video: int) -> str:
        return f"jpeg{video}"

    def read_frames(self, video: int, frame_indices) -> np.ndarray:
        return np.stack([video_io.decode_frame(self.clips[video][i]) for i in frame_indices])


def _source(kind: str, size: int, tfds_dir: str) -> PairSource:
    if kind == "jpeg":
        videos = _JpegVideos(size)
    elif kind == "synthetic":
        videos = synthetic.SyntheticVideos(range(8), 64, size)
    else:
        # TensorFlow Datasets loads only for this source: data_pipelines runs without it.
        from data_pipelines.tfds_builder import TfdsVideos

        videos = TfdsVideos(tfds_dir, "train")
    return PairSource(videos, seed=0, num_repeats=1000)


def run(size: int, preset: str, source: PairSource, num_pairs: int,
        batch_size: int = 4) -> dict:
    """Time read / augment / degrade for ``num_pairs`` pairs on the calling thread; each
    ``batch_size`` consecutive pairs share the degradation's per-batch choices where the
    preset's default config has them (as a training batch does)."""
    augment = AugmentPair(default_data_config().augmentation)
    degrade = DegradeSource(default_degradation_config(preset))
    rng, batch_rng = np.random.default_rng(0), np.random.default_rng(1)
    choices = None
    source[0]  # warm caches (textures, decoders)
    t_read = t_aug = t_deg = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(num_pairs):
        # Thread CPU time per stage: what the stage costs, not what the machine's load adds.
        t0 = time.thread_time()
        element = source[i]
        t1 = time.thread_time()
        element = augment.random_map(element, rng)
        t2 = time.thread_time()
        if i % batch_size == 0:
            choices = degrade.batch_choices(batch_rng)
        element = degrade.random_map(element, rng, choices)
        t3 = time.thread_time()
        t_read, t_aug, t_deg = t_read + t1 - t0, t_aug + t2 - t1, t_deg + t3 - t2
        assert element["source_lq"].shape == (size, size, 3)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    return {
        "size": size,
        "preset": preset,
        "pairs": num_pairs,
        "batch_size": batch_size,
        "pairs_per_s_per_core": round(num_pairs / cpu, 1),
        "pairs_per_s_wall": round(num_pairs / wall, 1),
        "cpu_ms_per_pair": {"decode": round(1e3 * t_read / num_pairs, 2),
                            "augment": round(1e3 * t_aug / num_pairs, 2),
                            "degrade": round(1e3 * t_deg / num_pairs, 2)},
    }


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (exit 2), not usage + error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = _OneLineParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--size", type=int, help="a single size (overrides --sizes)")
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    p.add_argument("--preset", choices=PRESETS, help="a single preset (overrides --presets)")
    p.add_argument("--source", choices=("jpeg", "synthetic", "tfds"), default="jpeg")
    p.add_argument("--tfds-dir", default="", help="prepare --out folder for --source tfds")
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4,
                   help="pairs that share the degradation's per-batch choices")
    p.add_argument("--out", default="", help="also write the JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = p.parse_args(argv)
    args.sizes = [args.size] if args.size is not None else args.sizes
    args.presets = [args.preset] if args.preset else args.presets
    bad = [s for s in args.sizes if not MIN_SIZE <= s <= MAX_SIZE]
    if bad:
        raise fail(f"--size {bad[0]} is out of range; give a frame size in "
                   f"[{MIN_SIZE}, {MAX_SIZE}] such as 256 or 512")
    if args.pairs < 1:
        raise fail(f"--pairs {args.pairs} must be at least 1")
    if args.batch_size < 1:
        raise fail(f"--batch-size {args.batch_size} must be at least 1")
    if args.source == "tfds" and not args.tfds_dir:
        raise fail("--source tfds needs --tfds-dir (the --out of data_pipelines.prepare)")
    if args.source == "tfds" and not Path(args.tfds_dir).is_dir():
        raise fail(f"--tfds-dir {args.tfds_dir} is not a folder; pass the --out of "
                   "data_pipelines.prepare")
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise fail(f"--out {args.out} exists; choose another path or pass --overwrite")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise fail(f"--out {args.out}: folder {Path(args.out).parent} does not exist")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    cv2.setNumThreads(1)  # per-core numbers
    results = []
    for size in args.sizes:
        try:
            source = _source(args.source, size, args.tfds_dir)
        except DatasetNotFoundError as err:  # a --tfds-dir without a prepared dataset
            raise fail(str(err)) from None
        for preset in args.presets:
            results.append(run(size, preset, source, args.pairs, args.batch_size))
            print(json.dumps(results[-1]), file=sys.stderr)
    report = {"source": args.source, "cv2_threads": 1,
              "load_average_1min": round(os.getloadavg()[0], 2),
              "cpu_count": os.cpu_count(), "results": results}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return report


if __name__ == "__main__":
    main()
