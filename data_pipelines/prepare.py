"""Decode, face-crop and store talking-head videos as a TFDS ArrayRecord dataset.

    python -m data_pipelines.prepare --videos DIR --out DIR --size 256 [--crop]
    python -m data_pipelines.prepare --videos ../shared/data/real_faces \
        --manifest ../shared/data/real_faces/MANIFEST.tsv --track-faces --size 64 --out DIR

Step 1 decodes every clip (optionally cropping it with one face box per chunk,
``face_crop.crop_video``), resizes it and stores its encoded frames in
``OUT/cache/<split>/<video>.npz``; a clip whose cache file exists is skipped, so an
interrupted or extended run only does the new work. Step 2 writes the TFDS dataset
(``OUT/tfds``) from the cache; it is rebuilt only when the set of videos changed.

A flat --videos folder is split per identity by a hash (``folders.split_of``): adding
clips never moves a test clip into training. The identity is the person of
``--manifest`` (a TSV with ``file`` and ``person_id``; clips are then named
``person#clip``, so id_sampling draws by person and a person's clips share a split), else
the VoxCeleb id before '#', else the clip name.

``--track-faces`` crops real footage as FOMM's ``crop-video.py`` does: MediaPipe's face
box (bundled, offline) on every frame, runs of frames whose face stays in place become
clips (``name#k``), each with one fixed box, cut where the face is lost; the frames' face
landmarks (the 13 points of ``face_mesh.TEACHER_MESH_POINTS``) are stored beside the dataset
(``OUT/landmarks/<split>.npz``) for the optional landmark teachers.

Undecodable clips (--skip-corrupt) and, with --crop or --track-faces, clips without a
detected face are skipped and totalled at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from data_pipelines import face_crop, face_mesh, folders, video_io
from data_pipelines.errors import AsrthError, fail
from data_pipelines.tfds_builder import (
    TalkingHeadFrames,
    TalkingHeadFramesConfig,
    cache_filename,
    landmarks_file,
    load_cached_landmarks,
    save_cached_video,
)


class PrepareError(AsrthError):
    """Arguments or videos a dataset cannot be prepared from (one line naming the fix)."""


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
    p.add_argument("--track-faces", action="store_true",
                   help="crop real footage: MediaPipe face box on every frame, one fixed box "
                   "per run of frames where the face stays in place, clips cut where it is "
                   "lost, face landmarks stored for the landmark teachers")
    p.add_argument("--min-track-frames", type=int, default=16,
                   help="with --track-faces, drop runs shorter than this")
    p.add_argument("--manifest", default="",
                   help="TSV with 'file' and 'person_id' columns: the split and id_sampling "
                   "go by person (test people are never in training)")
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
    if args.track_faces and (args.crop or args.chunk_frames):
        problems.append("--track-faces crops by itself; drop --crop / --chunk-frames")
    if args.min_track_frames < 2:
        problems.append(f"--min-track-frames must be at least 2, got {args.min_track_frames}")
    if args.manifest and not Path(args.manifest).is_file():
        problems.append(f"--manifest {args.manifest} does not exist; pass the TSV with each "
                        "clip's person_id")
    if not Path(args.videos).is_dir():
        problems.append(f"--videos {args.videos} is not a folder; pass the folder holding "
                        "the .mp4 files / frame folders (or train/ and test/)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        problems.append(f"--out {args.out} is a file; pass a folder for the dataset")
    if problems:
        raise PrepareError(problems[0])


def _settings(args: argparse.Namespace) -> dict:
    settings = {"size": args.size, "crop": args.crop, "chunk_frames": args.chunk_frames,
                "format": args.format, "quality": args.quality, "max_frames": args.max_frames}
    if args.center_crop_fallback:  # its centre crops must never mix into a faces-only cache
        settings["center_crop_fallback"] = True
    if args.track_faces:
        settings.update(track_faces=True, min_track_frames=args.min_track_frames)
    if args.manifest:  # names (person#clip) and splits follow the manifest
        settings["manifest"] = str(Path(args.manifest).resolve())
    return settings


def _empty_split_error(split: str, why: str) -> PrepareError:
    escape = " or pass --allow-empty-test" if split == "test" else ""
    return PrepareError(f"the {split} split is empty: {why}{escape}")


def _people(args: argparse.Namespace) -> dict[str, str] | None:
    return folders.read_people(args.manifest) if args.manifest else None


def plan_splits(args: argparse.Namespace) -> dict[str, list[Path]]:
    """Videos per split; an empty split stops here, before any decoding."""
    planned = folders.assign_splits(args.videos, args.train_fraction, _people(args))
    for split in ("train", "test"):
        if not planned[split] and not (split == "test" and args.allow_empty_test):
            raise _empty_split_error(
                split, folders.empty_split_fix(args.videos, split, args.train_fraction))
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


def _landmark_runs(landmarks: list, min_frames: int) -> list[tuple[int, int]]:
    """(start, stop) of the runs of frames with landmarks, at least ``min_frames`` long."""
    runs, start = [], None
    for t, found in enumerate([*landmarks, None]):
        if found is not None and start is None:
            start = t
        elif found is None and start is not None:
            if t - start >= min_frames:
                runs.append((start, t))
            start = None
    return runs


def tracked_clips(frames, size: int, min_frames: int,
                  detector: face_crop.Detector | None = None,
                  landmarker: face_mesh.LandmarkFn | None = None
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The clips ``--track-faces`` keeps of one video: (frames (T, size, size, 3) uint8,
    teacher landmarks (T, 13, 2) in their pixels, centres at integers) for every run of
    frames where the face stays in place (`face_crop.face_tracks`) and the face mesh
    finds it (a frame without landmarks cuts the run too)."""
    landmarker = landmarker or face_mesh.default_landmarker().landmarks
    clips = []
    for start, stop, box in face_crop.face_tracks(frames, detector=detector,
                                                  min_frames=min_frames):
        # Landmarks at the mesh's 256 px (AKD's size), whatever --size is.
        at_mesh = face_crop.apply_box(frames[start:stop], box, face_mesh.FRAME_SIZE)
        meshes = [landmarker(frame) for frame in at_mesh]
        for a, b in _landmark_runs(meshes, min_frames):
            # Pixel centres: +0.5 in the mesh's frame, integers in the dataset's.
            points = np.stack([face_mesh.teacher_landmarks(m) for m in meshes[a:b]])
            clips.append((face_crop.apply_box(frames[start + a:start + b], box, size),
                          (points * (size / face_mesh.FRAME_SIZE) - 0.5).astype(np.float32)))
    return clips


def _cache_tracked(args: argparse.Namespace, path: Path, folder: Path, name: str) -> list[str]:
    """Caches the tracked clips of one video (`tracked_clips`) as `name#k` and records
    their names in `<name>.tracks.json` (an empty list: no face), which marks the video
    done. Returns the names."""
    marker = folder / (cache_filename(name) + ".tracks.json")
    if marker.exists():
        return json.loads(marker.read_text())
    frames = video_io.read_video(path, args.max_frames or None)
    names = []
    for k, (clip, landmarks) in enumerate(tracked_clips(frames, args.size,
                                                        args.min_track_frames)):
        names.append(f"{name}#{k}")
        save_cached_video(folder / cache_filename(names[-1]),
                          [video_io.encode_frame(f, args.format, args.quality) for f in clip],
                          landmarks)
    marker.write_text(json.dumps(names))
    return names


def _skip_corrupt(args: argparse.Namespace, path: Path, err: ValueError,
                  skipped: dict[str, int]) -> None:
    """An undecodable clip stops the run, or with --skip-corrupt is counted and said."""
    if not args.skip_corrupt:
        raise PrepareError(f"{err} (or pass --skip-corrupt)") from None
    skipped["corrupt"] += 1
    tqdm.write(f"skipping {path}: {err}", file=sys.stderr)


def cache_videos(args: argparse.Namespace) -> dict[str, list[str]]:
    """Step 1: decode/crop/encode every video not cached yet; returns names per split."""
    planned = plan_splits(args)
    cache = Path(args.out) / "cache"
    settings_file = cache / "settings.json"
    if settings_file.exists() and json.loads(settings_file.read_text()) != _settings(args):
        raise PrepareError(
            f"{cache} was prepared with other settings "
            f"({settings_file.read_text().strip()}); use a new --out or delete that folder")
    cache.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(_settings(args)))
    splits: dict[str, list[str]] = {}
    skipped: dict[str, int] = {"corrupt": 0, "without a face": 0}
    people = _people(args)
    for split in ("train", "test"):
        (cache / split).mkdir(exist_ok=True)
        names, cached = [], 0
        bar = tqdm(planned[split], desc=f"{split} videos", unit="video", dynamic_ncols=True)
        for path in bar:
            name = folders.clip_name(path, people)
            if args.track_faces:
                try:
                    clips = _cache_tracked(args, path, cache / split, name)
                except ValueError as err:
                    _skip_corrupt(args, path, err, skipped)
                    continue
                if not clips:
                    skipped["without a face"] += 1
                    tqdm.write(f"skipping {path}: no run of {args.min_track_frames} frames "
                               "with a face", file=sys.stderr)
                names += clips
                bar.set_postfix(clips=len(names))
                continue
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
                _skip_corrupt(args, path, err, skipped)
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
            raise _empty_split_error(split, f"all {len(planned[split])} of its videos were "
                                     "skipped (see above)")
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
    if args.track_faces:
        _write_landmarks(out, splits)
    built.write_text(wanted)
    print(f"wrote {builder.data_dir} " + " ".join(f"{k}={len(v)}" for k, v in splits.items()))
    return Path(builder.data_dir)


def _write_landmarks(out: Path, splits: dict[str, list[str]]) -> None:
    """Each split's landmarks (video name -> (T, L, 2)) from the cache, beside the dataset
    (`tfds_builder.landmarks_file`), where `open_prepared` finds them."""
    for split, names in splits.items():
        if not names:
            continue
        arrays = {name: load_cached_landmarks(out / "cache" / split / cache_filename(name))
                  for name in names}
        target = landmarks_file(out, split)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(target)


def main(argv: list[str] | None = None) -> Path:
    """The CLI: a typed error of any step (bad argument, manifest, empty split, corrupt
    clip, missing face models) becomes one `error:` line and exit status 1."""
    try:
        args = _parse(argv)
        return build_tfds(args, cache_videos(args))
    except AsrthError as err:
        raise fail(str(err)) from None


if __name__ == "__main__":
    main()
