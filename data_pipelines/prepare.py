"""Decode, face-crop and store talking-head videos as a TFDS ArrayRecord dataset.

    python -m data_pipelines.prepare --videos DIR --out DIR --size 256 [--crop]

Step 1 decodes every clip (optionally cropping it with one face box per chunk,
``face_crop.crop_video``), resizes it and stores its encoded frames in
``OUT/cache/<split>/<video>.npz``; a clip whose cache file exists is skipped, so an
interrupted or extended run only does the new work. Step 2 writes the TFDS dataset
(``OUT/tfds``) from the cache; it is rebuilt only when the set of videos changed.

A flat --videos folder is split per identity by a hash (``folders.split_of``): adding
clips never moves a test clip into training. Undecodable clips (--skip-corrupt) and,
with --crop, clips without a detected face are skipped and totalled at the end.
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
    p.add_argument("--crop", action="store_true",
                   help="crop to the face (fixed box per chunk); clips without a face are "
                   "skipped")
    p.add_argument("--center-crop-fallback", action="store_true",
                   help="with --crop, keep clips without a detected face as centre crops")
    p.add_argument("--chunk-frames", type=int, default=0, help="frames per crop box (0: clip)")
    p.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (1-100)")
    p.add_argument("--max-frames", type=int, default=0, help="keep at most N frames (0: all)")
    p.add_argument("--train-fraction", type=float, default=0.8,
                   help="train share when --videos has no train/test folders; each clip's "
                   "split is fixed by a hash of its identity (VoxCeleb id, else its name)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip undecodable videos instead of stopping")
    p.add_argument("--allow-empty-test", action="store_true",
                   help="build the dataset even when no clip lands in the test split")
    args = p.parse_args(argv)
    _check_args(args)
    return args


def _check_args(args: argparse.Namespace) -> None:
    """Every bad argument is one line before any clip is decoded."""
    problems = []
    if args.size < 16:
        problems.append(f"--size must be at least 16, got {args.size}")
    if args.chunk_frames < 0:
        problems.append(f"--chunk-frames must be >= 0 (0: one box per clip), got "
                        f"{args.chunk_frames}")
    if not 1 <= args.quality <= 100:
        problems.append(f"--quality must be in 1..100, got {args.quality}")
    if args.max_frames < 0:
        problems.append(f"--max-frames must be >= 0 (0: all), got {args.max_frames}")
    if not 0.0 < args.train_fraction <= 1.0:
        problems.append(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    if args.center_crop_fallback and not args.crop:
        problems.append("--center-crop-fallback only applies with --crop")
    if not Path(args.videos).is_dir():
        problems.append(f"--videos {args.videos} is not a folder; pass the folder holding "
                        "the .mp4 files / frame folders (or train/ and test/)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        problems.append(f"--out {args.out} is a file; pass a folder for the dataset")
    if problems:
        raise SystemExit("error: " + problems[0])


def _settings(args: argparse.Namespace) -> dict:
    settings = {"size": args.size, "crop": args.crop, "chunk_frames": args.chunk_frames,
                "format": args.format, "quality": args.quality, "max_frames": args.max_frames}
    if args.center_crop_fallback:  # its centre crops must never mix into a faces-only cache
        settings["center_crop_fallback"] = True
    return settings


def _empty_split_error(args: argparse.Namespace, split: str, why: str) -> SystemExit:
    escape = " or pass --allow-empty-test" if split == "test" else ""
    return SystemExit(f"error: the {split} split is empty: {why}{escape}")


def plan_splits(args: argparse.Namespace) -> dict[str, list[Path]]:
    """Videos per split; an empty split stops here, before any decoding."""
    planned = folders.assign_splits(args.videos, args.train_fraction)
    for split in ("train", "test"):
        if not planned[split] and not (split == "test" and args.allow_empty_test):
            raise _empty_split_error(
                args, split, folders.empty_split_fix(args.videos, split, args.train_fraction))
    return planned


def _frames_for_cache(args: argparse.Namespace, path: Path) -> list[bytes]:
    """Decoded, cropped/resized and encoded frames; ValueError (NoFaceError) to skip."""
    frames = video_io.read_video(path, args.max_frames or None)
    if args.crop:
        frames = face_crop.crop_video(frames, args.size, chunk_frames=args.chunk_frames or None,
                                      require_face=not args.center_crop_fallback)
    else:
        frames = video_io.resize_frames(frames, args.size)
    return [video_io.encode_frame(f, args.format, args.quality) for f in frames]


def cache_videos(args: argparse.Namespace) -> dict[str, list[str]]:
    """Step 1: decode/crop/encode every video not cached yet; returns names per split."""
    planned = plan_splits(args)
    cache = Path(args.out) / "cache"
    settings_file = cache / "settings.json"
    if settings_file.exists() and json.loads(settings_file.read_text()) != _settings(args):
        raise SystemExit(
            f"error: {cache} was prepared with other settings "
            f"({settings_file.read_text().strip()}); use a new --out or delete that folder")
    cache.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(_settings(args)))
    splits: dict[str, list[str]] = {}
    skipped: dict[str, int] = {"corrupt": 0, "without a face": 0}
    for split in ("train", "test"):
        (cache / split).mkdir(exist_ok=True)
        names, cached = [], 0
        bar = tqdm(planned[split], desc=f"{split} videos", unit="video", dynamic_ncols=True)
        for path in bar:
            name = video_io.video_name(path)
            target = cache / split / cache_filename(name)
            if target.exists():
                names.append(name)
                cached += 1
                bar.set_postfix(cached=cached)
                continue
            try:
                encoded = _frames_for_cache(args, path)
            except face_crop.NoFaceError as err:
                skipped["without a face"] += 1
                tqdm.write(f"skipping {path}: {err} (pass --center-crop-fallback to keep it "
                           "as a centre crop)", file=sys.stderr)
                continue
            except ValueError as err:
                if not args.skip_corrupt:
                    raise SystemExit(f"error: {err} (or pass --skip-corrupt)") from None
                skipped["corrupt"] += 1
                tqdm.write(f"skipping {path}: {err}", file=sys.stderr)
                continue
            save_cached_video(target, encoded)
            names.append(name)
            bar.set_postfix(cached=cached, frames=len(encoded))
        splits[split] = names
    total = sum(len(v) for v in planned.values())
    if sum(skipped.values()):
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
        print(f"skipped {sum(skipped.values())} of {total} videos ({reasons}); kept "
              f"train={len(splits['train'])} test={len(splits['test'])}", file=sys.stderr)
    for split in ("train", "test"):
        if planned[split] and not splits[split] and not (split == "test"
                                                         and args.allow_empty_test):
            raise _empty_split_error(args, split, f"all {len(planned[split])} of its videos "
                                     "were skipped (see above)")
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
    return build_tfds(args, cache_videos(args))


if __name__ == "__main__":
    main()
