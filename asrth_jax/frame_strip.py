"""A frame strip of an `animate --side-by-side` video: a few frames stacked top to bottom.

    python -m asrth_jax.frame_strip result.mp4 --out docs/strip.png [--rows 5 --scale 3]

Each row is one frame of the video (source | driving | result with `--side-by-side`),
the rows evenly spaced over the video from its first frame, enlarged by `--scale` with
nearest-neighbour sampling so a 64 px model's pixels stay visible. For the README's
figures of how well a head follows its driver.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from asrth_jax import cli_args, errors, media


def strip(frames: np.ndarray, rows: int, scale: int = 1) -> np.ndarray:
    """`rows` frames of (T, H, W, 3) uint8, evenly spaced from frame 0 to the last, stacked
    vertically and enlarged `scale` times (nearest neighbour)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"expected frames (T, H, W, 3), got shape {frames.shape}")
    picks = np.unique(np.linspace(0, len(frames) - 1, num=max(1, rows)).round().astype(int))
    out = np.concatenate(list(frames[picks]), axis=0)
    if scale > 1:
        out = cv2.resize(out, (out.shape[1] * scale, out.shape[0] * scale),
                         interpolation=cv2.INTER_NEAREST)
    return out


def main(argv: list[str] | None = None) -> Path:
    p = cli_args.OneLineParser(prog="python -m asrth_jax.frame_strip", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="video file (e.g. animate --side-by-side output)")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--rows", type=cli_args.non_negative_int, default=5, help="frames shown")
    p.add_argument("--scale", type=cli_args.non_negative_int, default=3,
                   help="enlargement (nearest neighbour)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    try:
        out = cli_args.check_output_file(args.out, "--out", overwrite=args.overwrite)
        if not Path(args.video).is_file():
            raise media.MediaError(f"video {args.video} does not exist")
        image = strip(media.read_video(args.video), args.rows, max(1, args.scale))
    except errors.AsrthError as err:  # OutputPathError, MediaError
        raise cli_args.fail(str(err)) from None
    media.write_png(out, image)
    return out


if __name__ == "__main__":
    main()
