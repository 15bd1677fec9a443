"""Decode, face-crop and store talking-head videos as a TFDS ArrayRecord dataset.

    python -m data_pipelines.prepare --videos DIR --out DIR --size 256 [--crop]

Step 1 decodes every clip (optionally cropping it with one face box per chunk,
``face_crop.crop_video``), resizes it and stores its encoded frames in
``OUT/cache/<split>/<video>.npz``; a clip whose cache file exists is skipped, so an
interrupted or extended run only does the new work. Step 2 writes the TFDS dataset
(``OUT/tfds``) from the cache; it is rebuilt only when the set of videos changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import tensorflow_datasets as tfds
from tqdm import tqdm

from data_pipelines import face_crop, folders, video_io
from data_pipelines.errors import DatasetNotFoundError
from data_pipelines.tfds_builder import (
    TalkingHeadFrames,
    TalkingHeadFramesConfig,
    cache_filename,
    save_cached_video,
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--videos", required=True, help="folder of videos (or train/ and test/)")
    p.add_argument("--out", required=True, help="output folder (becomes config.data.tfds_dir)")
    p.add_argument("--size", type=int, default=256, help="square frame size")
    p.add_argument("--crop", action="store_true", help="crop to the face (fixed box per chunk)")
    p.add_argument("--chunk-frames", type=int, default=0, help="frames per crop box (0: clip)")
    p.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p.add_argument("--max-frames", type=int, default=0, help="keep at most N frames (0: all)")
    p.add_argument("--train-fraction", type=float, default=0.8,
                   help="train share when --videos has no train/test folders")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip undecodable videos instead of stopping")
    return p.parse_args(argv)


def _settings(args: argparse.Namespace) -> dict:
    return {"size": args.size, "crop": args.crop, "chunk_frames": args.chunk_frames,
            "format": args.format, "quality": args.quality, "max_frames": args.max_frames}


def cache_videos(args: argparse.Namespace) -> dict[str, list[str]]:
    """Step 1: decode/crop/encode every video not cached yet; returns names per split."""
    cache = Path(args.out) / "cache"
    settings_file = cache / "settings.json"
    if settings_file.exists() and json.loads(settings_file.read_text()) != _settings(args):
        raise SystemExit(
            f"{cache} was prepared with other settings ({settings_file.read_text().strip()}); "
            "use a new --out or delete that folder")
    cache.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(_settings(args)))
    splits: dict[str, list[str]] = {}
    for split in ("train", "test"):
        try:
            paths = folders.split_videos(args.videos, split, args.train_fraction)
        except DatasetNotFoundError:
            if split == "train":
                raise
            print(f"note: no test videos in {args.videos}; the test split stays empty",
                  file=sys.stderr)
            paths = []
        (cache / split).mkdir(exist_ok=True)
        names, skipped = [], 0
        bar = tqdm(paths, desc=f"{split} videos", unit="video", dynamic_ncols=True)
        for path in bar:
            name = video_io.video_name(path)
            target = cache / split / cache_filename(name)
            if target.exists():
                names.append(name)
                skipped += 1
                bar.set_postfix(cached=skipped)
                continue
            try:
                frames = video_io.read_video(path, args.max_frames or None)
            except ValueError as err:
                if args.skip_corrupt:
                    tqdm.write(f"skipping {path}: {err}")
                    continue
                raise SystemExit(f"{err} (or pass --skip-corrupt)") from None
            if args.crop:
                frames = face_crop.crop_video(frames, args.size,
                                              chunk_frames=args.chunk_frames or None)
            else:
                frames = video_io.resize_frames(frames, args.size)
            save_cached_video(target, [video_io.encode_frame(f, args.format, args.quality)
                                       for f in frames])
            names.append(name)
            bar.set_postfix(cached=skipped, frames=len(frames))
        splits[split] = names
    (cache / "manifest.json").write_text(json.dumps({"splits": splits}, indent=1))
    return splits


def build_tfds(args: argparse.Namespace, splits: dict[str, list[str]]) -> Path:
    """Step 2: (re)write the ArrayRecord dataset when the cached video set changed."""
    out = Path(args.out)
    data_dir = out / "tfds"
    builder = TalkingHeadFrames(
        data_dir=str(data_dir),
        config=TalkingHeadFramesConfig(size=args.size, frame_format=args.format),
        file_format="array_record",
    )
    built = data_dir / "built_manifest.json"
    wanted = json.dumps({"splits": splits, "settings": _settings(args)}, sort_keys=True)
    if built.exists() and built.read_text() == wanted and Path(builder.data_dir).exists():
        print(f"dataset up to date: {builder.data_dir}")
        return Path(builder.data_dir)
    if Path(builder.data_dir).exists():
        shutil.rmtree(builder.data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(out / "cache"))
    )
    built.write_text(wanted)
    print(f"wrote {builder.data_dir} " + " ".join(f"{k}={len(v)}" for k, v in splits.items()))
    return Path(builder.data_dir)


def main(argv: list[str] | None = None) -> Path:
    args = _parse(argv)
    if not Path(args.videos).is_dir():
        raise SystemExit(f"--videos {args.videos} is not a folder; pass the folder holding "
                         "the .mp4 files / frame folders (or train/ and test/)")
    return build_tfds(args, cache_videos(args))


if __name__ == "__main__":
    main()
