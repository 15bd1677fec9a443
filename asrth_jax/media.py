"""Small image / video I/O helpers for `animate` and `evaluate`.

Images are returned as float32 RGB in [0, 1] whatever their mode on disk (gray,
gray+alpha, RGB, RGBA, 8 or 16 bit). Videos are decoded by
`data_pipelines.video_io` (OpenCV, imageio-ffmpeg fallback) and written with the
ffmpeg binary that imageio-ffmpeg bundles, which also copies the audio track.
Every failure is raised as `MediaError` with one line that names the file.

What one file may cost is bounded before it is decoded: an image's size is read from
its header (`read_image_header`, PIL's lazy open) and refused above
`MAX_IMAGE_PIXELS`; a video's frame size is read from its container and refused above
`MAX_VIDEO_FRAME_PIXELS`, and its frames are decoded one at a time
(`iter_video_frames`), so a caller can shrink each before the next is read. EXIF
orientation is applied, so a phone portrait is upright.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from asrth_jax import errors
from data_pipelines import video_io

DEFAULT_FPS = 25.0
# A 50-megapixel image decodes to 150 MB (uint8) and 600 MB as float32 RGB: above it a
# small crafted file (a 16000x16000 PNG of gray is 276 KB) could take gigabytes.
MAX_IMAGE_PIXELS = 50_000_000
MAX_VIDEO_FRAME_PIXELS = 3840 * 2160  # 4K UHD: its decoder keeps several such frames
READABLE_IMAGES = "PNG, JPEG, BMP, WebP, GIF or TIFF"
_EXIF_ORIENTATION_TAG = 0x0112
# imageio-ffmpeg (the fallback decoder of `video_io`) otherwise starts ffmpeg with
# preexec_fn=os.setpgrp, which runs CPython's fork hooks; JAX's hook then warns that
# os.fork() was called with its threads running. This documented switch drops it.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")


class MediaError(errors.AsrthError, ValueError):
    """An unreadable or unwritable image / video (message is one line)."""


def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg (no system ffmpeg needed)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def to_float_rgb(image: np.ndarray) -> np.ndarray:
    """Any-mode image array (H, W), (H, W, 1|2|3|4), uint8/uint16/float -> (H, W, 3) float32.

    Alpha is dropped (as the reference demo does with `[..., :3]`); gray is repeated.
    Channel order is taken as RGB(A).
    """
    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif img.dtype == bool:
        img = img.astype(np.float32)
    else:
        img = img.astype(np.float32)
        if img.size and img.max() > 1.0:  # float data stored in 0..255
            img = img / 255.0
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4):
        raise MediaError(f"expected an image (H, W[, C]) with 1-4 channels, got {img.shape}")
    if img.shape[-1] in (1, 2):  # gray or gray + alpha
        img = np.repeat(img[..., :1], 3, axis=-1)
    return np.ascontiguousarray(np.clip(img[..., :3], 0.0, 1.0))


@dataclass(frozen=True)
class ImageHeader:
    """An image file's size as it is shown (EXIF orientation applied) and that orientation."""

    width: int
    height: int
    orientation: int  # EXIF 1..8; 1: stored upright


def _too_large(kind: str, path: Path, pixels: int, limit: int, size: str = "") -> MediaError:
    shown = f"{size} pixels, " if size else ""
    return MediaError(f"{kind} {path} is too large ({shown}{pixels / 1e6:.0f} megapixels; "
                      f"the limit is {limit / 1e6:.0f}): scale it down and try again")


def _exif_orientation(img) -> int:
    """The EXIF orientation in a lazily opened PIL image's header (1 when absent)."""
    from PIL import Image

    try:
        if "exif" in img.info:  # JPEG APP1, WebP, PNG eXIf before the pixels: no decode
            exif = Image.Exif()
            exif.load(img.info["exif"])
            value = exif.get(_EXIF_ORIENTATION_TAG, 1)
        else:
            value = getattr(img, "tag_v2", {}).get(_EXIF_ORIENTATION_TAG, 1)  # TIFF
    except Exception:  # noqa: BLE001 - a damaged EXIF block only loses the orientation
        return 1
    return int(value) if value in range(1, 9) else 1


def read_image_header(path: str | os.PathLike,
                      max_pixels: int = MAX_IMAGE_PIXELS) -> ImageHeader:
    """Size and orientation from the file's header, without decoding its pixels.

    Raises MediaError for a missing or unidentifiable file and for more than
    `max_pixels` pixels (a decompression bomb is refused here, in milliseconds).
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"cannot read image {path}: no such file")
    try:
        with warnings.catch_warnings():
            # PIL warns above 89 MP and raises above 179 MP; our own limit is lower.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # lazy: reads the header only
                width, height = img.size
                orientation = _exif_orientation(img)
    except Image.DecompressionBombError as err:
        match = re.search(r"\((\d+) pixels\)", str(err))
        raise _too_large("image", path, int(match.group(1)) if match else 2 * 89_478_485,
                         max_pixels) from None
    except Exception:  # noqa: BLE001 - any header failure is reported as unreadable
        raise MediaError(f"cannot read image {path}: not a decodable image file "
                         f"({READABLE_IMAGES})") from None
    if width * height > max_pixels:
        raise _too_large("image", path, width * height, max_pixels, f"{width}x{height}")
    if orientation >= 5:  # the stored image is transposed: width and height swap
        width, height = height, width
    return ImageHeader(width, height, orientation)


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """The image as EXIF `orientation` says it is shown (PIL's `ImageOps.exif_transpose`)."""
    turns = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1), 8: lambda a: np.rot90(a, 1),
    }
    turn = turns.get(orientation)
    return image if turn is None else np.ascontiguousarray(turn(image))


def shrink_to_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """The image scaled (area averaging, aspect kept) so its longer side is at most `max_side`."""
    h, w = image.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return out.reshape(*out.shape[:2], *image.shape[2:])


def read_image(path: str | os.PathLike, *, max_side: int = 0,
               max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file of any mode -> (H, W, 3) float32 RGB in [0, 1], upright.

    The header is checked first (`read_image_header`); `max_side` > 0 shrinks the image
    before it becomes float (a quarter of the memory of shrinking after).
    """
    path = Path(path)
    header = read_image_header(path, max_pixels)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # ignores EXIF: applied below
    if img is None:
        try:  # formats OpenCV lacks (e.g. some GIF/WebP variants)
            import imageio.v3 as iio

            img = np.asarray(iio.imread(path))
        except Exception:  # noqa: BLE001 - any decoder failure is reported as unreadable
            raise MediaError(f"cannot read image {path}: not a decodable image file "
                             f"({READABLE_IMAGES})") from None
        if img.ndim == 4:  # animated image: first frame
            img = img[0]
    elif img.ndim == 3 and img.shape[-1] == 3:
        img = img[..., ::-1]
    elif img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., [2, 1, 0, 3]]
    img = shrink_to_side(upright(img, header.orientation), max_side)
    return to_float_rgb(img)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize of one (H, W, C) image; area averaging (anti-aliased) when shrinking."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if min(h, w) >= size else cv2.INTER_CUBIC
    out = cv2.resize(image, (size, size), interpolation=interp)
    if out.ndim == 2:
        out = out[..., None]
    if np.issubdtype(out.dtype, np.floating):
        out = np.clip(out, 0.0, 1.0)
    return out


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames -> (T, size, size, 3), anti-aliased when shrinking."""
    return video_io.resize_frames(frames, size)


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    has_audio: bool
    num_frames: int | None
    width: int = 0  # 0: unknown
    height: int = 0


_FPS_RE = re.compile(r"Video:.*?(\d+(?:\.\d+)?) fps")
_TBR_RE = re.compile(r"Video:.*?(\d+(?:\.\d+)?k?) tbr")
_SIZE_RE = re.compile(r"Video:.*?, (\d{1,6})x(\d{1,6})")


def _check_frame_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_VIDEO_FRAME_PIXELS:
        raise _too_large("video", path, width * height, MAX_VIDEO_FRAME_PIXELS,
                         f"{width}x{height}")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, audio stream, frame count (when known) and frame size, from the header.

    Raises MediaError for frames over `MAX_VIDEO_FRAME_PIXELS` (none is decoded).
    """
    path = Path(path)
    if path.is_dir():  # frame folder: no timing information
        files = video_io.frame_files(path)
        if not files:
            raise MediaError(f"frame folder {path} holds no images; add frames")
        first = read_image_header(files[0])
        _check_frame_size(path, first.width, first.height)
        return VideoInfo(DEFAULT_FPS, False, len(files), first.width, first.height)
    if not path.is_file():
        raise MediaError(f"cannot read video {path}: no such file")
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    finally:
        cap.release()
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True, check=False)
    text = proc.stderr
    has_audio = bool(re.search(r"Stream #\S+.*: Audio:", text))
    if not fps or not np.isfinite(fps) or fps > 1000:
        match = _FPS_RE.search(text) or _TBR_RE.search(text)
        fps = float(match.group(1).rstrip("k")) if match else DEFAULT_FPS
    if not (width and height) and (size := _SIZE_RE.search(text)):
        width, height = int(size.group(1)), int(size.group(2))
    _check_frame_size(path, width, height)
    return VideoInfo(fps, has_audio, count or None, width, height)


def iter_video_frames(path: str | os.PathLike,
                      max_frames: int | None = None) -> Iterator[np.ndarray]:
    """The (H, W, 3) uint8 RGB frames of a video file or frame folder, one at a time.

    Only one full-size frame is alive at a time unless the caller keeps them; the
    frame size is checked against `MAX_VIDEO_FRAME_PIXELS` before the first is
    decoded. MediaError when nothing can be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"cannot read video {path}: no such file")
    count = 0
    if path.is_dir():
        for file in video_io.frame_files(path)[:max_frames]:
            header = read_image_header(file)
            _check_frame_size(file, header.width, header.height)
            try:
                frame = video_io.read_image(file)  # IMREAD_COLOR: EXIF orientation applied
            except ValueError as err:
                raise MediaError(str(err)) from None
            count += 1
            yield frame
    else:
        cap = cv2.VideoCapture(str(path))
        try:
            _check_frame_size(path, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
                              int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0))
            while max_frames is None or count < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                count += 1
                yield np.ascontiguousarray(frame[..., ::-1])
        finally:
            cap.release()
        if count == 0:  # containers OpenCV cannot open: imageio-ffmpeg
            for frame in _iter_with_imageio(path, max_frames):
                count += 1
                yield frame
    if count == 0:
        raise MediaError(f"cannot decode any frame of {path}; the file is corrupt or not a "
                         "video (re-download it or delete it)")


def _iter_with_imageio(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    try:
        import imageio.v2 as imageio

        reader = imageio.get_reader(str(path))
    except Exception:  # noqa: BLE001 - reported by the caller as "cannot decode"
        return
    with reader:
        width, height = reader.get_meta_data().get("size", (0, 0))
        _check_frame_size(path, int(width), int(height))
        for index, frame in enumerate(reader):
            if max_frames is not None and index >= max_frames:
                break
            yield np.ascontiguousarray(np.asarray(frame)[..., :3])


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of a video file or frame folder, all at full size.

    For short clips (tests, results); `iter_video_frames` is the bounded way.
    """
    return np.stack(list(iter_video_frames(path, max_frames)))


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 with rounding (uint8 input is returned unchanged)."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _pipe_writer(path: str, width: int, height: int, fps: float,
                 quality: int) -> subprocess.Popen:
    """An ffmpeg process that encodes raw RGB frames from its stdin as H.264 yuv420p.

    Started with plain `subprocess.Popen`: imageio-ffmpeg's `write_frames` passes
    `preexec_fn=os.setpgrp`, which makes CPython run its fork hooks, and JAX's hook
    then warns that `os.fork()` was called with JAX's threads running. Without a
    `preexec_fn` the child is created by fork+exec in C with no Python code in between.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
           "-r", f"{float(fps):.6f}", "-i", "-", "-an", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-crf", str(quality), "-movflags", "+faststart", path]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def write_video(path: str | os.PathLike, frames, fps: float, *, quality: int = 18) -> int:
    """Writes RGB frames (iterable of (H, W, 3) uint8/float) as H.264 yuv420p mp4.

    Odd sizes are padded by one pixel (yuv420p needs even sides). Returns the count.
    """
    path = str(path)
    proc = None
    count = 0
    size = None
    try:
        for frame in frames:
            frame = to_uint8(frame)
            h, w = frame.shape[:2]
            pad_h, pad_w = h % 2, w % 2
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            if proc is None:
                size = frame.shape[:2]
                proc = _pipe_writer(path, frame.shape[1], frame.shape[0], fps, quality)
            elif frame.shape[:2] != size:
                raise MediaError(f"frame {count} of {path} is {frame.shape[:2]}, not {size}")
            try:
                proc.stdin.write(np.ascontiguousarray(frame).tobytes())
            except BrokenPipeError:
                break  # ffmpeg exited; its message is reported below
            count += 1
    finally:
        if proc is not None:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            err = proc.stderr.read().decode(errors="replace")
            proc.stderr.close()
            code = proc.wait()
    if proc is None:
        raise MediaError(f"no frames to write to {path}")
    if code != 0:
        last = (err.strip().splitlines() or [f"ffmpeg exit status {code}"])[-1]
        raise MediaError(f"cannot write video {path}: {last}")
    return count


def mux_audio(video_path: str | os.PathLike, audio_source: str | os.PathLike,
              out_path: str | os.PathLike, duration: float | None = None) -> bool:
    """Copies the audio of `audio_source` next to the video stream of `video_path`.

    Writes `out_path`; the audio is stream-copied when the mp4 container takes its
    codec and re-encoded to AAC otherwise, and cut to `duration` seconds (the video's
    length; `-shortest` would drop trailing video frames). Returns False (and writes
    nothing) when `audio_source` has no audio stream.
    """
    if not probe_video(audio_source).has_audio:
        return False
    base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video_path),
            "-i", str(audio_source), "-map", "0:v:0", "-map", "1:a:0?", "-c:v", "copy"]
    for audio_codec in (["-c:a", "copy"], ["-c:a", "aac", "-b:a", "192k"]):
        limit = ["-t", f"{duration:.6f}"] if duration else []
        proc = subprocess.run(base + audio_codec + limit + [str(out_path)],
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return True
    last = (proc.stderr.strip().splitlines() or ["unknown ffmpeg error"])[-1]
    raise MediaError(f"cannot copy the audio of {audio_source} into {out_path}: {last}")


def write_video_with_audio(path: str | os.PathLike, frames, fps: float,
                           audio_source: str | os.PathLike | None = None) -> bool:
    """Writes `path` atomically (temp file in the same folder, then rename).

    Returns True when an audio track was copied from `audio_source`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp_") as tmp:
        silent = Path(tmp) / "video.mp4"
        count = write_video(silent, frames, fps)
        final = silent
        with_audio = False
        if audio_source is not None and not Path(audio_source).is_dir():
            muxed = Path(tmp) / "muxed.mp4"
            with_audio = mux_audio(silent, audio_source, muxed, duration=count / float(fps))
            if with_audio:
                final = muxed
        os.replace(final, path)
    return with_audio


def hstack(images: list[np.ndarray]) -> np.ndarray:
    """Side-by-side panel of equally tall images."""
    return np.concatenate([to_uint8(i) for i in images], axis=1)


def hstack_to_height(images: list[np.ndarray], height: int) -> np.ndarray:
    """Side-by-side panel; each image resized to `height` keeping its aspect ratio."""
    panels = []
    for image in images:
        image = to_uint8(image)
        h, w = image.shape[:2]
        if h != height:
            width = max(1, int(round(w * height / h)))
            interp = cv2.INTER_AREA if h > height else cv2.INTER_CUBIC
            image = cv2.resize(image, (width, height), interpolation=interp)
        panels.append(image)
    return np.concatenate(panels, axis=1)


def is_image_file(path: str | os.PathLike) -> bool:
    """A file whose suffix names a still image format (a driving image, not a video)."""
    path = Path(path)
    return path.suffix.lower() in video_io.IMAGE_SUFFIXES and not path.is_dir()


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """(H, W, 3) RGB image -> `path` atomically (temp file in the same folder, rename).

    The format follows the suffix (.png, .jpg, .jpeg, .bmp, .webp).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=suffix)
    os.close(fd)
    try:
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in (".jpg", ".jpeg") else []
        ok = cv2.imwrite(tmp, np.ascontiguousarray(to_uint8(image)[..., ::-1]), params)
        if not ok:
            raise MediaError(f"cannot write image {path}: OpenCV cannot encode {suffix}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """(H, W, 3) RGB (uint8 or float [0, 1]) -> PNG."""
    ok = cv2.imwrite(str(path), np.ascontiguousarray(to_uint8(image)[..., ::-1]))
    if not ok:
        raise MediaError(f"cannot write image {path}")
