"""One-line, actionable failures for missing or unusable datasets."""

from __future__ import annotations

from asrth_jax import errors


class DatasetNotFoundError(errors.AsrthError, FileNotFoundError):
    """A configured dataset path is missing or empty: one line naming the path and the
    command that fixes it. A typed error like every library error (`asrth_jax.errors`):
    each `main()` turns it into that line and a non-zero exit."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def prepare_hint(videos: str = "VIDEOS_DIR", out: str = "OUT_DIR", size: int = 256) -> str:
    return f"python -m data_pipelines.prepare --videos {videos} --out {out} --size {size} --crop"
