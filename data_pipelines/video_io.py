"""Decoding of talking-head videos stored as ``.mp4`` files or folders of frames.

FOMM/VoxCeleb keeps each clip either as a video file or as a folder of frame
images (whose folder name may itself end in ``.mp4``); HDTF / TalkingHead-1KH ship
plain ``.mp4`` files. Everything here returns RGB uint8 arrays so callers never
have to care which layout a clip came from.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np

from data_pipelines.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def is_frame_folder(path: Path) -> bool:
    """A directory holding at least one frame image counts as one video."""
    return path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())


def is_video(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES) or is_frame_folder(path)


def list_videos(directory: Path) -> list[Path]:
    """Videos directly inside ``directory``, sorted by name for a stable order."""
    return sorted((p for p in Path(directory).iterdir() if is_video(p)), key=lambda p: p.name)


def video_name(path: Path) -> str:
    """Clip name without the container suffix (``id#yt#s#e.mp4`` -> ``id#yt#s#e``)."""
    name = path.name
    low = name.lower()
    for suffix in VIDEO_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot decode frame image {path}; delete or replace the file")
    return np.ascontiguousarray(img[..., ::-1])


def read_video(path: Path, max_frames: int | None = None) -> np.ndarray:
    """All frames (T, H, W, 3) uint8 RGB of a video file or frame folder.

    Raises ValueError naming the file if nothing can be decoded (corrupt clip).
    """
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)[:max_frames]
        if not files:
            raise DataError(f"frame folder {path} holds no images; remove it or add frames")
        return np.stack([read_image(f) for f in files])
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while max_frames is None or len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame[..., ::-1])
    finally:
        cap.release()
    if not frames:
        frames = _read_with_imageio(path, max_frames)
    if not frames:
        raise DataError(
            f"cannot decode any frame of {path}; the file is corrupt or not a video "
            "(re-download it or delete it)"
        )
    return np.ascontiguousarray(np.stack(frames))


def _read_with_imageio(path: Path, max_frames: int | None) -> list[np.ndarray]:
    """Fallback decoder (imageio-ffmpeg) for containers OpenCV cannot open."""
    try:
        frames = []
        with imageio.get_reader(str(path)) as reader:
            for frame in reader:
                frames.append(np.asarray(frame)[..., :3])
                if max_frames is not None and len(frames) >= max_frames:
                    break
        return frames
    except Exception:  # noqa: BLE001 - any decoder failure means "corrupt", reported by caller
        return []


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize (T, H, W, 3) frames to size x size; INTER_AREA anti-aliases when shrinking."""
    if frames.shape[1:3] == (size, size):
        return frames
    interp = cv2.INTER_AREA if frames.shape[1] >= size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])


def encode_frame(frame: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """Encode one RGB frame to JPEG/PNG bytes with OpenCV (BGR on the wire)."""
    bgr = np.ascontiguousarray(frame[..., ::-1])
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cv2.imencode failed to encode a {frame.shape} frame as {fmt}")
    return buf.tobytes()


def decode_frame(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG bytes to an RGB uint8 frame."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError("cannot decode an encoded frame; re-run data_pipelines.prepare")
    return np.ascontiguousarray(img[..., ::-1])
