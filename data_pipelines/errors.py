"""The library's error base and how a `main()` exits on one; dataset errors.

`data_pipelines` sits below `asrth_jax` (which re-exports `AsrthError` and `fail` from
here: `asrth_jax.errors`, `asrth_jax.cli_args`), so the errors of both packages share
one base and a data error is caught as any other `errors.AsrthError`.
"""

from __future__ import annotations

import sys


class AsrthError(Exception):
    """A problem the user can fix; `str(error)` is one line naming it and the fix."""


def fail(message: str, status: int = 1) -> SystemExit:
    """The SystemExit every `main()` raises (`raise fail(str(err)) from None`): one line,
    `error: <first line of message>`, on stderr, and exit `status` (1; 2 where a CLI
    keeps argparse's code for a bad flag). The only way a `main()` exits on an error."""
    first = (message.strip().splitlines() or ["failed"])[0].removeprefix("error: ")
    if status == 1:  # Python prints a string code to stderr and exits with 1
        return SystemExit(f"error: {first}")
    print(f"error: {first}", file=sys.stderr, flush=True)
    return SystemExit(status)


class ConfigError(AsrthError, ValueError):
    """A config file or value that cannot be used (re-exported as
    `asrth_jax.errors.ConfigError`; here so the data checks can raise it too)."""


class DataError(AsrthError, ValueError):
    """A video, frame or collection that cannot be used as data (corrupt, empty): one
    line naming it and the fix (delete it, re-run `data_pipelines.prepare`)."""


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
