"""Animate one portrait with a driving video (or a driving image).

    python -m asrth_jax.animate --checkpoint DIR --config configs/hdtf_512.py \\
        --source portrait.jpg --driving talk.mp4 --out result.mp4 [--crop] [--adapt-scale]
    python -m asrth_jax.animate --torch-checkpoint mix-train.pth.tar --config ... (same)
    python -m asrth_jax.animate ... --driving pose.jpg --out result.png   (one image)

The source (any size; gray, RGBA, 16-bit are converted to RGB) and the driving frames
are resized to `config.image_size` with anti-aliasing as they are decoded, or
face-cropped first with `--crop` (no face found is an error unless
`--center-crop-fallback`); `--crop --paste-back` puts the animated face back into the
full-resolution portrait (feathered edges), so the result has the portrait's size
(`--max-portrait-side` bounds it). Motion is relative to the first driving frame by
default (`--absolute` uses the driving keypoints as they are); `--adapt-scale` scales it
by the keypoint hull ratio; `--find-best-frame` starts from the driving frame whose face
landmarks best match the source's (`best_frame`); `--yaw/--pitch/--roll` fix the head
angles (degrees). What was changed about an input (a stretch, a frame limit, a centre
crop) is printed as a `note:` line. A video result keeps the driving video's frame rate
and audio. A driving image gives one image in the driver's pose and expression; relative
motion then starts from the source's own pose.

The work is done by `animate(options, animator, image_size, progress)`, which the web
app (`asrth_jax.app`) calls too; `main` only parses flags and builds the model.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asrth_jax import cli_args, compile_cache, errors, media
from data_pipelines import face_crop as face_crop_lib

if TYPE_CHECKING:
    from asrth_jax.inference import Animator

Progress = Callable[[int, int], None]  # (frames done, frames in total)
IMAGE_OUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MIN_SIDE = 32  # pixels on an input's shorter side: below it there is no face to find
MAX_STRETCH = 2.0  # aspect ratio past which an uncropped input cannot become a square face
NOTE_STRETCH = 1.1  # squeezed more than this into the model's square: said in a note
NOTE_UPSCALE = 2.0  # enlarged more than this to the model's size: said in a note
DETECT_MAX_SIDE = 1024  # faces are found on frames shrunk to this (boxes scaled back)
PROBE_FRAMES = 12  # frames of a clip the face box is found on (`face_crop_box`)


class AnimateError(errors.AsrthError, ValueError):
    """Bad options or input files (message is one line naming the problem and the fix)."""


@dataclass(frozen=True)
class Wording:
    """How messages name options and files: the CLI's flags and paths, or a page's words.

    `options` maps each `AnimateOptions` field a message can name to its name there;
    with `show_paths` False a file is named by its file name only (no server folders).
    """

    options: Mapping[str, str]
    show_paths: bool = True

    def option(self, name: str) -> str:
        return self.options.get(name, name)

    def file(self, path: str | os.PathLike) -> str:
        return str(path) if self.show_paths else Path(path).name

    def say(self, message: str, *paths: str | os.PathLike) -> str:
        """A message written for the CLI (flags, full paths) in these words, one line."""
        text = _one_line(message)
        if self.show_paths:
            return text
        for path in sorted(map(str, paths), key=len, reverse=True):
            text = text.replace(str(Path(path)), self.file(path))
        for name, shown in self.options.items():
            text = re.sub(rf"--{name.replace('_', '-')}\b", shown, text)
        return text


CLI_WORDING = Wording({name: "--" + name.replace("_", "-") for name in (
    "source", "driving", "out", "crop", "paste_back", "center_crop_fallback", "fps",
    "max_frames", "max_portrait_side", "yaw", "pitch", "roll", "overwrite")})


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
    center_crop_fallback: bool = False  # crop: no face found -> the centre square, said
    max_portrait_side: int = 0  # > 0: the portrait is shrunk to this first (0: as it is)
    wording: Wording = field(default=CLI_WORDING, compare=False)

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
    notes: tuple[str, ...] = ()  # one line each: what was changed about the inputs


@dataclass(frozen=True)
class AnimateResult:
    out: Path
    frames: int
    fps: float | None  # None for an image result
    with_audio: bool
    seconds: float
    notes: tuple[str, ...] = ()


def _one_line(message: str) -> str:
    return (message.strip().splitlines() or ["failed"])[0]


def check_options(opts: AnimateOptions) -> None:
    """Refuses bad options before any model or file work (AnimateError, one line)."""
    w = opts.wording
    for name in ("source", "driving"):
        path = getattr(opts, name)
        if not os.path.exists(path):
            raise AnimateError(f"{w.option(name)} {w.file(path)} does not exist")
    if os.path.isdir(opts.source):
        raise AnimateError(f"{w.option('source')} {w.file(opts.source)} is a folder; "
                           "pass one image file")
    if not (math.isfinite(opts.fps) and opts.fps >= 0):
        raise AnimateError(f"{w.option('fps')} must be a positive number (or 0 for the "
                           f"driving video's), got {opts.fps:g}")
    if opts.max_frames < 0:
        raise AnimateError(f"{w.option('max_frames')} must be >= 0 (0: all frames), "
                           f"got {opts.max_frames}")
    if opts.max_portrait_side < 0:
        raise AnimateError(f"{w.option('max_portrait_side')} must be >= 0 (0: no limit), "
                           f"got {opts.max_portrait_side}")
    for name in ("yaw", "pitch", "roll"):
        value = getattr(opts, name)
        if value is not None and not math.isfinite(value):
            raise AnimateError(f"{w.option(name)} must be a finite angle in degrees, "
                               f"got {value}")
    if opts.paste_back and not opts.crop:
        raise AnimateError(f"{w.option('paste_back')} puts the face crop back into the "
                           f"portrait, so it needs {w.option('crop')}")
    _check_out(opts)


def _check_out(opts: AnimateOptions) -> None:
    w = opts.wording
    out = Path(opts.out)
    flag = w.option("out")
    if out.is_dir():
        example = out / ("result.png" if opts.image_driver else "result.mp4")
        raise AnimateError(f"{flag} {w.file(out)} is a folder; give a file name inside it, "
                           f"e.g. {w.file(example)}")
    suffix = out.suffix.lower()
    if opts.image_driver and suffix not in IMAGE_OUT_SUFFIXES:
        raise AnimateError(f"{w.option('driving')} {w.file(opts.driving)} is an image, so the "
                           f"result is one image: {flag} {w.file(out)} must end in .png or .jpg")
    if not opts.image_driver and suffix != ".mp4":
        raise AnimateError(f"{flag} {w.file(out)} must end in .mp4")
    if out.exists() and not opts.overwrite:
        raise AnimateError(f"{w.file(out)} exists; choose another {flag} or pass "
                           f"{w.option('overwrite')}")
    parent = out.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise AnimateError(f"{flag} {w.file(out)}: {w.file(ancestor)} is a file, not "
                                   f"a folder; choose another {flag}")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # A real write, not os.access: root passes os.access on read-only mounts.
        with tempfile.TemporaryFile(dir=parent, prefix=".tmp_"):
            pass
    except OSError as err:
        raise AnimateError(f"{flag} {w.file(out)}: cannot write in {w.file(parent)} "
                           f"({err.strerror}); choose a writable folder") from None


def _shape_notes(what: str, path: str, width: int, height: int, size: int,
                 opts: AnimateOptions) -> list[str]:
    """Refuses an input that cannot hold a face; notes what resizing it will do to it.

    Without a face crop the whole input is squeezed into the model's square, so past
    `MAX_STRETCH` it is refused and past `NOTE_STRETCH` the stretch is said; with a
    crop the box is square and only its size matters (said after it is found).
    """
    w = opts.wording
    shown = f"{what} {w.file(path)} ({width}x{height})"
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE:
        raise AnimateError(f"{shown} is too small to hold a face: use one at least "
                           f"{MIN_SIDE} pixels on its shorter side (the model works at "
                           f"{size}x{size})")
    if opts.crop:
        return []
    notes = []
    stretch = long / short
    if stretch > MAX_STRETCH:
        raise AnimateError(f"{shown} is {stretch:.1f} times as wide as high (or high as "
                           f"wide): squeezed into the model's square it is no face; turn on "
                           f"{w.option('crop')} or cut it nearer to a square")
    if stretch > NOTE_STRETCH:
        notes.append(f"{shown} was stretched {stretch:.2f}x to the model's square; "
                     f"{w.option('crop')} keeps its proportions")
    if size / short > NOTE_UPSCALE:
        notes.append(f"{shown} was enlarged {size / short:.1f}x to the model's {size}x{size}: "
                     "expect a blurred result")
    return notes


def detection_copy(frame: np.ndarray) -> np.ndarray:
    """A frame shrunk to at most DETECT_MAX_SIDE, for the face detector."""
    return media.shrink_to_side(frame, DETECT_MAX_SIDE)


def _sample_for_detection(frames: Iterable[np.ndarray], limit: int | None
                          ) -> tuple[np.ndarray, int, bool, tuple[int, int]]:
    """Evenly spaced shrunk copies of a stream's frames, without keeping the stream.

    Keeps every `stride`-th frame, doubling the stride whenever more than
    2 * PROBE_FRAMES are kept, so any length ends with PROBE_FRAMES..2*PROBE_FRAMES
    samples spread over the whole clip. Returns (samples, frames counted up to `limit`,
    whether the stream had more, the full frame size (h, w)).
    """
    kept: list[tuple[int, np.ndarray]] = []
    stride, count, more, full = 1, 0, False, (0, 0)
    for index, frame in enumerate(frames):
        if limit is not None and index == limit:
            more = True
            break
        count, full = index + 1, frame.shape[:2]
        if index % stride == 0:
            kept.append((index, detection_copy(frame)))
            if len(kept) > 2 * PROBE_FRAMES:
                stride *= 2
                kept = [(i, f) for i, f in kept if i % stride == 0]
    return np.stack([f for _, f in kept]), count, more, full


def _full_size_box(box: face_crop_lib.Box, small: tuple[int, int],
                   full: tuple[int, int]) -> face_crop_lib.Box:
    """A square box found on a shrunk (h, w) copy, at the full frame's (h, w)."""
    if small == full:
        return box
    scale = full[1] / small[1]
    side = min(round((box[2] - box[0]) * scale), *full)
    left = min(max(round(box[0] * scale), 0), full[1] - side)
    top = min(max(round(box[1] * scale), 0), full[0] - side)
    return (left, top, left + side, top + side)


def detect_face_box(samples: np.ndarray, full: tuple[int, int]) -> face_crop_lib.Box | None:
    """The face crop box of one input at its full (h, w), from shrunk copies of its frames
    (`detection_copy`; one for an image), or None when no face is found."""
    try:
        box = face_crop_lib.face_crop_box(samples, num_probe_frames=PROBE_FRAMES,
                                          require_face=True)
    except face_crop_lib.NoFaceError:
        return None
    return _full_size_box(box, samples.shape[1:3], full)


def _face_box(samples: np.ndarray, full: tuple[int, int], what: str, path: str,
              size: int, opts: AnimateOptions, notes: list[str]) -> face_crop_lib.Box:
    """`detect_face_box`; a missing face is an AnimateError unless
    `opts.center_crop_fallback`, then the centre square and a note."""
    w = opts.wording
    box = detect_face_box(samples, full)
    if box is None:
        if not opts.center_crop_fallback:
            raise AnimateError(
                f"no face found in {what} {w.file(path)}: use one where the face is "
                f"visible, upright and not tiny, or turn on "
                f"{w.option('center_crop_fallback')} to use its centre")
        notes.append(f"no face found in {what} {w.file(path)}: its centre square was used")
        box = _full_size_box(face_crop_lib.face_crop_box(samples[:1]), samples.shape[1:3], full)
    side = box[2] - box[0]
    if size / side > NOTE_UPSCALE:
        notes.append(f"the face in {what} {w.file(path)} is {side} pixels wide: enlarged "
                     f"{size / side:.1f}x to the model's {size}x{size}, expect a blurred result")
    return box


def _resize_one(frame: np.ndarray, size: int, box: face_crop_lib.Box | None) -> np.ndarray:
    """One full-size uint8 frame at the model's size: its face box, or all of it."""
    if box is not None:
        return face_crop_lib.apply_box(frame[None], box, size)[0]
    return media.resize_frames(frame[None], size)[0]


def _driving_at_size(opts: AnimateOptions, size: int, frames: Callable[[], Iterator[np.ndarray]],
                     notes: list[str]) -> tuple[np.ndarray, bool]:
    """(T, size, size, 3) uint8 driving frames, each shrunk as it is decoded, and whether
    the clip had more than `opts.max_frames`.

    Only frames at the model's size are kept (a 1080p frame is 6 MB, at 256 px 0.2 MB).
    A face crop needs its box before the first frame is cut, so the clip is read twice:
    once for evenly spaced shrunk samples to find the face on, once to cut.
    """
    limit = opts.max_frames or None
    if not opts.crop:
        kept: list[np.ndarray] = []
        for index, frame in enumerate(frames()):
            if limit is not None and index == limit:
                return np.stack(kept), True
            kept.append(_resize_one(frame, size, None))
        return np.stack(kept), False
    what = "the driving image" if opts.image_driver else "the driving video"
    samples, count, more, full = _sample_for_detection(frames(), limit)
    box = _face_box(samples, full, what, opts.driving, size, opts, notes)
    out = np.empty((count, size, size, 3), np.uint8)
    filled = 0
    for frame in frames():
        if filled == count:
            break
        out[filled] = _resize_one(frame, size, box)
        filled += 1
    return out[:filled], more


def load_inputs(opts: AnimateOptions, size: int) -> Inputs:
    """Reads the source and driving files and crops/resizes them to `size` (AnimateError).

    What an input may cost is checked from its header first (`media`'s pixel limits,
    `_shape_notes`); the driving clip is shrunk frame by frame as it is decoded.
    """
    w = opts.wording
    notes: list[str] = []
    try:
        header = media.read_image_header(opts.source)
        notes += _shape_notes("the portrait", opts.source, header.width, header.height,
                              size, opts)
        portrait = media.read_image(opts.source, max_side=opts.max_portrait_side)
        if portrait.shape[:2] != (header.height, header.width):
            notes.append(f"the portrait {w.file(opts.source)} ({header.width}x{header.height})"
                         f" was scaled to {portrait.shape[1]}x{portrait.shape[0]}: "
                         f"{w.option('max_portrait_side')} is {opts.max_portrait_side}")
        if opts.image_driver:
            driver = media.read_image_header(opts.driving)
            notes += _shape_notes("the driving image", opts.driving, driver.width,
                                  driver.height, size, opts)
            image = media.to_uint8(media.read_image(opts.driving))

            def frames() -> Iterator[np.ndarray]:
                return iter([image])

            fps, has_audio, known = 0.0, False, 1
        else:
            info = media.probe_video(opts.driving)
            if info.width and info.height:
                notes += _shape_notes("the driving video", opts.driving, info.width,
                                      info.height, size, opts)

            def frames() -> Iterator[np.ndarray]:
                return media.iter_video_frames(opts.driving)

            fps, has_audio, known = (opts.fps or info.fps), info.has_audio, info.num_frames
        box = None
        if opts.crop:
            src_u8 = media.to_uint8(portrait)
            box = _face_box(detection_copy(src_u8)[None], src_u8.shape[:2], "the portrait",
                            opts.source, size, opts, notes)
            source = _resize_one(src_u8, size, box).astype(np.float32) / 255.0
        else:
            source = media.resize_image(portrait, size)
        driving, more = _driving_at_size(opts, size, frames, notes)
    except media.MediaError as err:
        raise AnimateError(w.say(str(err), opts.source, opts.driving)) from None
    if more:
        of = f" of {known}" if known else ""
        notes.append(f"used the first {len(driving)}{of} frames of the driving video: "
                     f"{w.option('max_frames')} is {opts.max_frames}")
    return Inputs(source, driving, fps, has_audio,
                  portrait if opts.paste_back else None, box if opts.paste_back else None,
                  tuple(notes))


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
            return AnimateResult(out, 1, None, False, time.perf_counter() - t0, inputs.notes)
        with_audio = media.write_video_with_audio(
            out, frames(), inputs.fps,
            opts.driving if opts.audio and inputs.has_audio else None)
    except media.MediaError as err:
        raise AnimateError(_one_line(str(err))) from None
    return AnimateResult(out, total, inputs.fps, with_audio, time.perf_counter() - t0,
                         inputs.notes)


def animate(opts: AnimateOptions, animator: Animator, image_size: int,
            progress: Progress | None = None) -> AnimateResult:
    """Checks `opts`, reads the inputs and writes the animation (the library entry point)."""
    check_options(opts)
    return render(opts, load_inputs(opts, image_size), animator, progress)


# ---------------------------------------------------------------------- command line
def add_model_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """The weights and config flags shared by the CLI and the web app (which has a
    default model, so they are optional there: `required=False`)."""
    weights = p.add_mutually_exclusive_group(required=required)
    weights.add_argument("--checkpoint", help="Orbax checkpoint dir (train --workdir or "
                         "asrth_jax.convert --out)")
    weights.add_argument("--torch-checkpoint", help="released AdaSR .pth.tar")
    p.add_argument("--config", required=required,
                   help="config file, e.g. configs/hdtf_512.py")
    compile_cache.add_flag(p)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asrth_jax.animate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--source", required=True, help="source portrait image")
    p.add_argument("--driving", required=True,
                   help="driving video (file or frame folder) or one driving image")
    p.add_argument("--out", required=True, help="output .mp4 (.png/.jpg for a driving image)")
    p.add_argument("--crop", action="store_true",
                   help="face-crop source and driving video (no face found: an error)")
    p.add_argument("--center-crop-fallback", action="store_true",
                   help="with --crop: where no face is found, use the centre square")
    p.add_argument("--max-portrait-side", type=int, default=0,
                   help="shrink the portrait first so its longer side is at most N "
                        "pixels (0: as it is); bounds --paste-back's output size")
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
        audio=not args.no_audio, overwrite=args.overwrite,
        center_crop_fallback=args.center_crop_fallback,
        max_portrait_side=args.max_portrait_side)


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
    compile_cache.enable_if(args.compile_cache)
    opts = options_from_args(args)
    if args.batch_size < 1:
        raise cli_args.fail(f"--batch-size must be >= 1, got {args.batch_size}")
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
        raise cli_args.fail(str(err)) from None
    for note in inputs.notes:
        print(f"note: {note}", file=sys.stderr)

    from tqdm import tqdm

    bar = tqdm(total=len(inputs.driving), unit="frame", desc="animate", disable=args.quiet,
               dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        result = render(opts, inputs, animator, progress)
    except errors.AsrthError as err:  # AnimateError, or one of best frame / movement scale
        raise cli_args.fail(str(err)) from None
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
