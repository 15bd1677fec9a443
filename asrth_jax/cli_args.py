"""Command-line plumbing shared by the entry points: one-line argument errors and
output-path checks that run before any slow work (model building, compiling)."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NoReturn

from asrth_jax import errors
from data_pipelines.errors import fail as fail  # re-exported: every main()'s one exit rule


class OutputPathError(errors.AsrthError, ValueError):
    """An output path that cannot be written as asked (one-line message)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are a single `error: ...` line (no usage block) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; give 0 or more")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not positive; give 1 or more")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def check_parent_writable(path: Path, flag: str) -> None:
    """The nearest existing ancestor must be a writable directory (it will be created under)."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{flag} {path}: {parent} is a file, not a directory; "
                              "choose a path under a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: directory {parent} is not writable; "
                              "choose another path")


def check_output_file(path: str | os.PathLike, flag: str, *, overwrite: bool) -> Path:
    """A file the command will write: refuses a directory, an existing file without
    `overwrite`, a file as parent and an unwritable location."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a directory; give a file path")
    if path.exists():
        if not overwrite:
            raise OutputPathError(f"{flag} {path} exists; choose another path or pass "
                                  "--overwrite")
        if not os.access(path, os.W_OK):
            raise OutputPathError(f"{flag} {path} exists and is not writable; choose another "
                                  "path")
        # It is replaced by a file written beside it, so its folder must take a new file.
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise OutputPathError(f"{flag} {path}: directory {path.parent} is not writable; "
                                  "choose another path")
        return path
    check_parent_writable(path, flag)
    return path


def check_output_dir(path: str | os.PathLike, flag: str, *, overwrite: bool,
                     files: Iterable[str] = ()) -> Path:
    """A directory the command will write `files` into: refuses a file, a non-empty
    directory without `overwrite`, an unwritable location, and (with `overwrite`) an
    output name that is taken by a directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {path} is a file, not a directory; give a directory "
                              "path")
    if not path.exists():
        check_parent_writable(path, flag)
        return path
    if any(path.iterdir()) and not overwrite:
        raise OutputPathError(f"{flag} {path} exists and is not empty; choose another or "
                              "pass --overwrite")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path} is not writable; choose another directory")
    for name in files:
        target = path / name
        if target.is_dir():
            raise OutputPathError(f"{flag} {path}: {target} is a directory, so the {name} "
                                  "file cannot be written; remove it or choose another --out")
        if target.exists() and not os.access(target, os.W_OK):
            raise OutputPathError(f"{flag} {path}: {target} is not writable; choose another "
                                  "--out")
    return path


@contextlib.contextmanager
def replaced_when_whole(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path beside `path` to write the new file to; once the block
    ends without error the file is flushed to disk and renamed over `path` (an atomic
    swap), otherwise it is removed. A kill or a full disk mid-write leaves `path` as
    it was. The temporary name keeps `path`'s suffix (writers such as `np.savez` add
    theirs when it is missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, _mode_for(path))  # mkstemp's file is private (0600)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or a new file's under the process umask."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
