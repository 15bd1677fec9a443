"""Animate one portrait with a driving video (or a driving image).

    python -m asrth_jax.animate --checkpoint DIR --config configs/hdtf_512.py \\
        --source portrait.jpg --driving talk.mp4 --out result.mp4 [--crop] [--adapt-scale]
    python -m asrth_jax.animate --torch-checkpoint mix-train.pth.tar --config ... (same)
    python -m asrth_jax.animate ... --driving pose.jpg --out result.png   (one image)

The source (any size; gray, RGBA, 16-bit are converted to RGB) and the driving frames
are resized to `config.image_size` with anti-aliasing, or face-cropped first with
`--crop`; `--crop --paste-back` puts the animated face back into the full-resolution
portrait (feathered edges), so the result has the portrait's size. Motion is relative
to the first driving frame by default (`--absolute` uses the driving keypoints as they
are); `--adapt-scale` scales it by the keypoint hull ratio; `--find-best-frame` starts
from the driving frame whose face landmarks best match the source's (`best_frame`);
`--yaw/--pitch/--roll` fix the head angles (degrees). A video result
keeps the driving video's frame rate and audio. A driving image gives one image in the
driver's pose and expression; relative motion then starts from the source's own pose.

The work is done by `animate(options, animator, image_size, progress)`, which the web
app (`asrth_jax.app`) calls too; `main` only parses flags and builds the model.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asrth_jax import errors, media

if TYPE_CHECKING:
    from asrth_jax.inference import Animator

Progress = Callable[[int, int], None]  # (frames done, frames in total)
IMAGE_OUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class AnimateError(errors.AsrthError, ValueError):
    """Bad options or input files (message is one line naming the problem and the fix)."""


@dataclass(frozen=True)
class AnimateOptions:
    """Everything one animation needs besides the model (the CLI flags, the app's controls)."""

    source: str
    driving: str
    out: str
    crop: bool = False
    paste_back: bool = False
    relative: bool = True
    adapt_scale: bool = False
    find_best_frame: bool = False
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    side_by_side: bool = False
    max_frames: int = 0  # 0: all frames
    fps: float = 0.0  # 0: the driving video's
    audio: bool = True
    overwrite: bool = False

    @property
    def image_driver(self) -> bool:
        return media.is_image_file(self.driving)


@dataclass(frozen=True)
class Inputs:
    """Decoded inputs at the model's size (plus what paste-back needs)."""

    source: np.ndarray  # (S, S, 3) float32
    driving: np.ndarray  # (T, S, S, 3) uint8
    fps: float
    has_audio: bool
    portrait: np.ndarray | None  # (H, W, 3) float32 full portrait, for paste-back
    box: tuple[int, int, int, int] | None  # crop box of the source in the portrait


@dataclass(frozen=True)
class AnimateResult:
    out: Path
    frames: int
    fps: float | None  # None for an image result
    with_audio: bool
    seconds: float


def _one_line(message: str) -> str:
    return (message.strip().splitlines() or ["failed"])[0]


def check_options(opts: AnimateOptions) -> None:
    """Refuses bad options before any model or file work (AnimateError, one line)."""
    for flag, path in (("--source", opts.source), ("--driving", opts.driving)):
        if not os.path.exists(path):
            raise AnimateError(f"{flag} {path} does not exist")
    if os.path.isdir(opts.source):
        raise AnimateError(f"--source {opts.source} is a folder; pass one image file")
    if not (math.isfinite(opts.fps) and opts.fps >= 0):
        raise AnimateError(f"--fps must be a positive number (or 0 for the driving video's), "
                           f"got {opts.fps:g}")
    if opts.max_frames < 0:
        raise AnimateError(f"--max-frames must be >= 0 (0: all frames), got {opts.max_frames}")
    for name in ("yaw", "pitch", "roll"):
        value = getattr(opts, name)
        if value is not None and not math.isfinite(value):
            raise AnimateError(f"--{name} must be a finite angle in degrees, got {value}")
    if opts.paste_back and not opts.crop:
        raise AnimateError("--paste-back puts a face crop back into the portrait: add --crop")
    _check_out(opts)


def _check_out(opts: AnimateOptions) -> None:
    out = Path(opts.out)
    if out.is_dir():
        raise AnimateError(f"--out {out} is a folder; give a file name inside it, e.g. "
                           f"{out / ('result.png' if opts.image_driver else 'result.mp4')}")
    suffix = out.suffix.lower()
    if opts.image_driver and suffix not in IMAGE_OUT_SUFFIXES:
        raise AnimateError(f"--driving {opts.driving} is an image, so the result is one image: "
                           f"--out {out} must end in .png or .jpg")
    if not opts.image_driver and suffix != ".mp4":
        raise AnimateError(f"--out {out} must end in .mp4")
    if out.exists() and not opts.overwrite:
        raise AnimateError(f"{out} exists; choose another --out or pass --overwrite")
    parent = out.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise AnimateError(f"--out {out}: {ancestor} is a file, not a folder; "
                                   "choose another --out")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # A real write, not os.access: root passes os.access on read-only mounts.
        with tempfile.TemporaryFile(dir=parent, prefix=".tmp_"):
            pass
    except OSError as err:
        raise AnimateError(f"--out {out}: cannot write in {parent} ({err.strerror}); "
                           "choose a writable folder") from None


def load_inputs(opts: AnimateOptions, size: int) -> Inputs:
    """Reads the source and driving files and crops/resizes them to `size` (AnimateError)."""
    from data_pipelines import face_crop

    try:
        portrait = media.read_image(opts.source)
        if opts.image_driver:
            driving = media.to_uint8(media.read_image(opts.driving))[None]
            fps, has_audio = 0.0, False
        else:
            info = media.probe_video(opts.driving)
            driving = media.read_video(opts.driving, opts.max_frames or None)
            fps, has_audio = (opts.fps or info.fps), info.has_audio
    except media.MediaError as err:
        raise AnimateError(_one_line(str(err))) from None
    box = None
    if opts.crop:
        src_u8 = media.to_uint8(portrait)[None]
        box = face_crop.face_crop_box(src_u8)
        source = face_crop.apply_box(src_u8, box, size)[0].astype(np.float32) / 255.0
        driving = face_crop.crop_video(driving, size)
    else:
        source = media.resize_image(portrait, size)
        driving = media.resize_frames(driving, size)
    return Inputs(source, driving, fps, has_audio,
                  portrait if opts.paste_back else None, box if opts.paste_back else None)


def render(opts: AnimateOptions, inputs: Inputs, animator: Animator,
           progress: Progress | None = None) -> AnimateResult:
    """Animates `inputs` and writes `opts.out` (atomically); `progress` sees every batch."""
    from asrth_jax import paste_back

    t0 = time.perf_counter()
    source, driving = inputs.source, inputs.driving
    total = len(driving)
    src = animator.encode_source(source)
    initial = 0
    if opts.find_best_frame and total > 1:
        from asrth_jax.best_frame import find_best_frame

        initial = find_best_frame(source, driving)
        print(f"best frame: {initial}", file=sys.stderr)
    # An image driver has no first frame to move relative to: start from the source's
    # own pose (its keypoints as a driving frame are exactly kp_source).
    initial_frame = source if opts.image_driver else driving[initial]
    motion = animator.prepare_motion(src, initial_frame, relative=opts.relative,
                                     adapt_scale=opts.adapt_scale, yaw=opts.yaw,
                                     pitch=opts.pitch, roll=opts.roll)
    if progress is not None:
        progress(0, total)

    def frames() -> Iterator[np.ndarray]:
        # Rendering every frame against one initial frame equals the reference's
        # backward pass (frames initial..0) and forward pass (initial..end) joined.
        done = 0
        for batch in animator.render_batches(src, driving, motion):
            for pred in batch:
                if inputs.portrait is not None:
                    result = paste_back.paste(inputs.portrait, pred, inputs.box)
                    panels = [inputs.portrait, driving[done], result]
                else:
                    result = pred
                    panels = [source, driving[done], result]
                if opts.side_by_side:
                    yield media.hstack_to_height(panels, result.shape[0])
                else:
                    yield result
                done += 1
            if progress is not None:
                progress(done, total)

    out = Path(opts.out)
    try:
        if opts.image_driver:
            media.write_image(out, next(frames()))
            return AnimateResult(out, 1, None, False, time.perf_counter() - t0)
        with_audio = media.write_video_with_audio(
            out, frames(), inputs.fps,
            opts.driving if opts.audio and inputs.has_audio else None)
    except media.MediaError as err:
        raise AnimateError(_one_line(str(err))) from None
    return AnimateResult(out, total, inputs.fps, with_audio, time.perf_counter() - t0)


def animate(opts: AnimateOptions, animator: Animator, image_size: int,
            progress: Progress | None = None) -> AnimateResult:
    """Checks `opts`, reads the inputs and writes the animation (the library entry point)."""
    check_options(opts)
    return render(opts, load_inputs(opts, image_size), animator, progress)


# ---------------------------------------------------------------------- command line
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The weights and config flags shared by the CLI and the web app."""
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="Orbax checkpoint dir (train --workdir or "
                         "asrth_jax.convert --out)")
    weights.add_argument("--torch-checkpoint", help="released AdaSR .pth.tar")
    p.add_argument("--config", required=True, help="config file, e.g. configs/hdtf_512.py")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asrth_jax.animate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--source", required=True, help="source portrait image")
    p.add_argument("--driving", required=True,
                   help="driving video (file or frame folder) or one driving image")
    p.add_argument("--out", required=True, help="output .mp4 (.png/.jpg for a driving image)")
    p.add_argument("--crop", action="store_true", help="face-crop source and driving video")
    p.add_argument("--paste-back", action="store_true",
                   help="with --crop: put the animated face back into the full portrait")
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


def options_from_args(args: argparse.Namespace) -> AnimateOptions:
    return AnimateOptions(
        source=args.source, driving=args.driving, out=args.out, crop=args.crop,
        paste_back=args.paste_back, relative=args.relative, adapt_scale=args.adapt_scale,
        find_best_frame=args.find_best_frame, yaw=args.yaw, pitch=args.pitch, roll=args.roll,
        side_by_side=args.side_by_side, max_frames=args.max_frames, fps=args.fps,
        audio=not args.no_audio, overwrite=args.overwrite)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"error: {_one_line(message) if message else 'failed'}")


def load_animator(config, *, checkpoint: str | None, torch_checkpoint: str | None,
                  dtype: str = "float32", batch_size: int = 1,
                  config_name: str = "") -> Animator:
    """The generator side of `config` with its weights, as an Animator (AnimateError)."""
    from asrth_jax import inference, model_loading

    try:
        model = model_loading.load_generator_side(
            config, checkpoint=checkpoint, torch_checkpoint=torch_checkpoint,
            dtype=None if dtype == "float32" else dtype)
    except model_loading.ModelLoadError as err:
        where = f" (config {config_name})" if config_name else ""
        raise AnimateError(f"{_one_line(str(err))}{where}") from None
    return inference.make_animator(model, batch_size)


def main(argv: list[str] | None = None) -> Path:
    args = _parse(argv)
    opts = options_from_args(args)
    if args.batch_size < 1:
        raise _fail(f"--batch-size must be >= 1, got {args.batch_size}")
    from asrth_jax.config_lib import ConfigError, load_config_file

    try:
        check_options(opts)
        config = load_config_file(args.config)
        size = int(config.image_size)
        inputs = load_inputs(opts, size)
        animator = load_animator(config, checkpoint=args.checkpoint,
                                 torch_checkpoint=args.torch_checkpoint, dtype=args.dtype,
                                 batch_size=args.batch_size, config_name=args.config)
    except (AnimateError, ConfigError) as err:
        raise _fail(str(err)) from None

    from tqdm import tqdm

    bar = tqdm(total=len(inputs.driving), unit="frame", desc="animate", disable=args.quiet,
               dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        result = render(opts, inputs, animator, progress)
    except errors.AsrthError as err:  # AnimateError, or one of best frame / movement scale
        raise _fail(str(err)) from None
    finally:
        bar.close()
    if result.fps is None:
        print(f"wrote {result.out} ({result.seconds:.3f} s incl. compilation)", file=sys.stderr)
    else:
        print(f"wrote {result.out}: {result.frames} frames at {result.fps:g} fps"
              f"{' with audio' if result.with_audio else ''} "
              f"({result.seconds / result.frames:.3f} s/frame incl. compilation)",
              file=sys.stderr)
    return result.out


if __name__ == "__main__":
    main()
