"""Animate one portrait with a driving video.

    python -m asrth_jax.animate --checkpoint DIR --config configs/hdtf_512.py \\
        --source portrait.jpg --driving talk.mp4 --out result.mp4 [--crop] [--adapt-scale]
    python -m asrth_jax.animate --torch-checkpoint mix-train.pth.tar --config ... (same)

The source (any size; gray, RGBA, 16-bit are converted to RGB) and the driving frames
are resized to `config.image_size` with anti-aliasing, or face-cropped first with
`--crop`. Motion is relative to the first driving frame by default (`--absolute` uses
the driving keypoints as they are); `--adapt-scale` scales it by the keypoint hull
ratio; `--find-best-frame` starts from the driving frame whose keypoints best match
the source and animates backward and forward from it; `--yaw/--pitch/--roll` fix the
head angles (degrees). The result keeps the driving video's frame rate and audio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from asrth_jax import media


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asrth_jax.animate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="Orbax checkpoint dir (train --workdir or "
                         "asrth_jax.convert --out)")
    weights.add_argument("--torch-checkpoint", help="released AdaSR .pth.tar")
    p.add_argument("--config", required=True, help="config file, e.g. configs/hdtf_512.py")
    p.add_argument("--source", required=True, help="source portrait image")
    p.add_argument("--driving", required=True, help="driving video (file or frame folder)")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--crop", action="store_true", help="face-crop source and driving video")
    motion = p.add_mutually_exclusive_group()
    motion.add_argument("--relative", dest="relative", action="store_true", default=True,
                        help="motion relative to the initial driving frame (default)")
    motion.add_argument("--absolute", dest="relative", action="store_false",
                        help="use the driving keypoints as they are")
    p.add_argument("--adapt-scale", action="store_true",
                   help="scale relative motion by the keypoint hull areas")
    p.add_argument("--find-best-frame", action="store_true",
                   help="start from the driving frame best aligned with the source")
    p.add_argument("--yaw", type=float, default=None, help="fixed yaw (degrees)")
    p.add_argument("--pitch", type=float, default=None, help="fixed pitch (degrees)")
    p.add_argument("--roll", type=float, default=None, help="fixed roll (degrees)")
    p.add_argument("--batch-size", type=int, default=1, help="driving frames per step")
    p.add_argument("--side-by-side", action="store_true",
                   help="write source | driving | result panels")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--max-frames", type=int, default=0, help="use the first N frames (0: all)")
    p.add_argument("--fps", type=float, default=0.0,
                   help="output frame rate (0: the driving video's)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype (parameters stay float32)")
    p.add_argument("--no-audio", action="store_true", help="do not copy the driving audio")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"error: {message.splitlines()[0] if message else 'failed'}")


def load_inputs(args: argparse.Namespace, size: int) -> tuple[np.ndarray, np.ndarray, float,
                                                                bool]:
    """Source (size, size, 3) float, driving (T, size, size, 3) uint8, fps, has_audio."""
    from data_pipelines import face_crop

    try:
        source = media.read_image(args.source)
        info = media.probe_video(args.driving)
        driving = media.read_video(args.driving, args.max_frames or None)
    except media.MediaError as err:
        raise _fail(str(err)) from None
    if args.crop:
        src_u8 = media.to_uint8(source)
        source = face_crop.crop_video(src_u8[None], size)[0].astype(np.float32) / 255.0
        driving = face_crop.crop_video(driving, size)
    else:
        source = media.resize_image(source, size)
        driving = media.resize_frames(driving, size)
    return source, driving, (args.fps or info.fps), info.has_audio


def main(argv: list[str] | None = None) -> Path:
    args = _parse(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise _fail(f"{out} exists; choose another --out or pass --overwrite")
    if out.suffix.lower() != ".mp4":
        raise _fail(f"--out {out} must end in .mp4")
    if args.batch_size < 1:
        raise _fail(f"--batch-size must be >= 1, got {args.batch_size}")
    for flag, path in (("--source", args.source), ("--driving", args.driving)):
        if not os.path.exists(path):
            raise _fail(f"{flag} {path} does not exist")

    from asrth_jax import inference
    from asrth_jax.config_lib import load_config_file

    config = load_config_file(args.config)
    size = int(config.image_size)
    source, driving, fps, has_audio = load_inputs(args, size)
    try:
        model = inference.load_generator_side(
            config, checkpoint=args.checkpoint, torch_checkpoint=args.torch_checkpoint,
            dtype=None if args.dtype == "float32" else args.dtype)
    except inference.ModelLoadError as err:
        raise _fail(f"{err} (config {args.config})") from None
    animator = inference.make_animator(model, args.batch_size)

    t0 = time.perf_counter()
    src = animator.encode_source(source)
    initial = 0
    if args.find_best_frame:
        initial = animator.best_frame(source, driving)
        print(f"best frame: {initial}", file=sys.stderr)
    motion = animator.prepare_motion(src, driving[initial], relative=args.relative,
                                     adapt_scale=args.adapt_scale, yaw=args.yaw,
                                     pitch=args.pitch, roll=args.roll)
    # Rendering every frame against one initial frame equals the reference's backward
    # pass (frames initial..0) and forward pass (initial..end) joined.
    from tqdm import tqdm

    bar = tqdm(total=len(driving), unit="frame", desc="animate", disable=args.quiet,
               dynamic_ncols=True)

    def frames():
        done = 0
        for batch in animator.render_batches(src, driving, motion):
            for pred in batch:
                if args.side_by_side:
                    yield media.hstack([source, driving[done], pred])
                else:
                    yield pred
                done += 1
            bar.update(len(batch))

    try:
        with_audio = media.write_video_with_audio(
            out, frames(), fps, None if args.no_audio or not has_audio else args.driving)
    except media.MediaError as err:
        raise _fail(str(err)) from None
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    print(f"wrote {out}: {len(driving)} frames at {fps:g} fps"
          f"{' with audio' if with_audio else ''} ({seconds / len(driving):.3f} s/frame "
          "incl. compilation)", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
