"""Small image / video I/O helpers for `animate` and `evaluate`.

Images are returned as float32 RGB in [0, 1] whatever their mode on disk (gray,
gray+alpha, RGB, RGBA, 8 or 16 bit). Videos are decoded by
`data_pipelines.video_io` (OpenCV, imageio-ffmpeg fallback) and written with the
ffmpeg binary that imageio-ffmpeg bundles, which also copies the audio track.
Every failure is raised as `MediaError` with one line that names the file.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from asrth_jax import errors
from data_pipelines import video_io

DEFAULT_FPS = 25.0
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


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file of any mode -> (H, W, 3) float32 RGB in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"cannot read image {path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        try:  # formats OpenCV lacks (e.g. some GIF/WebP variants)
            import imageio.v3 as iio

            img = np.asarray(iio.imread(path))
        except Exception:  # noqa: BLE001 - any decoder failure is reported as unreadable
            raise MediaError(f"cannot read image {path}: not a decodable image file") from None
        if img.ndim == 4:  # animated image: first frame
            img = img[0]
        return to_float_rgb(img)
    if img.ndim == 3 and img.shape[-1] == 3:
        img = img[..., ::-1]
    elif img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., [2, 1, 0, 3]]
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


_FPS_RE = re.compile(r"Video:.*?(\d+(?:\.\d+)?) fps")
_TBR_RE = re.compile(r"Video:.*?(\d+(?:\.\d+)?k?) tbr")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, presence of an audio stream and (when known) frame count."""
    path = Path(path)
    if path.is_dir():  # frame folder: no timing information
        return VideoInfo(DEFAULT_FPS, False, len(video_io.frame_files(path)))
    if not path.is_file():
        raise MediaError(f"cannot read video {path}: no such file")
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True, check=False)
    text = proc.stderr
    has_audio = bool(re.search(r"Stream #\S+.*: Audio:", text))
    if not fps or not np.isfinite(fps) or fps > 1000:
        match = _FPS_RE.search(text) or _TBR_RE.search(text)
        fps = float(match.group(1).rstrip("k")) if match else DEFAULT_FPS
    return VideoInfo(fps, has_audio, count or None)


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of a video file or frame folder (`video_io`)."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"cannot read video {path}: no such file")
    try:
        return video_io.read_video(path, max_frames)
    except ValueError as err:
        raise MediaError(str(err).splitlines()[0]) from None


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
