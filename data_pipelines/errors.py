"""The library's error base and how a `main()` exits on one; dataset errors.

`data_pipelines` sits below `asrth_jax` (which re-exports `AsrthError` and `fail` from
here: `asrth_jax.errors`, `asrth_jax.cli_args`), so the errors of both packages share
one base and a data error is caught as any other `errors.AsrthError`.
"""

from __future__ import annotations


class AsrthError(Exception):
    """A problem the user can fix; `str(error)` is one line naming it and the fix."""


def fail(message: str) -> SystemExit:
    """The SystemExit a `main()` raises: `error: <first line>` on stderr, exit status 1."""
    first = message.splitlines()[0] if message else "failed"
    return SystemExit(f"error: {first.removeprefix('error: ')}")


class DatasetNotFoundError(AsrthError, FileNotFoundError):
    """A configured dataset path is missing or empty: one line naming the path and the
    command that fixes it. Each `main()` turns it into that line and a non-zero exit."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def prepare_hint(videos: str = "VIDEOS_DIR", out: str = "OUT_DIR", size: int = 256) -> str:
    return f"python -m data_pipelines.prepare --videos {videos} --out {out} --size {size} --crop"
