"""Guards of a training run directory: usable before anything is written, one trainer.

The lock is `fcntl.flock` on `WORKDIR/.train.lock.<process index>`, held for the life
of the trainer: the kernel drops it when the process ends in any way (kill -9
included), so a crashed run never leaves it stuck. One lock file per process index
lets the processes of one multi-process run coexist while a second run (whose
process 0 wants the same file as the first's) is refused. The lock file is opened
without following links and must be a plain file of its own: a lock name that points
at a user's file is refused, never truncated.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator

from asrth_jax import errors


class WorkdirError(errors.AsrthError):
    """A workdir that cannot be used; the message is one line for the user."""


def is_remote(workdir: str) -> bool:
    return "://" in workdir


def check_workdir(workdir: str) -> None:
    """Raises WorkdirError unless `workdir` is (or can be made) a writable directory.
    Creates nothing; remote (gs://) paths are left to the storage client."""
    if is_remote(workdir):
        return
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"--workdir {path} is a file, not a directory; pass a directory")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise WorkdirError(f"--workdir {path} cannot be created: {existing} is a file")
    try:  # a real probe: os.access says yes to root on read-only or virtual filesystems
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise WorkdirError(f"--workdir {path} is not writable ({exc.strerror} in {existing}); "
                           "pass a directory you can write to") from None


def _open_lock_file(path: str) -> int:
    """A descriptor on the lock file, created if absent. Never follows a symlink and
    never opens anything but a plain file of its own (one link), so a lock name that a
    user (or an attacker) pointed at another file cannot get that file truncated."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise WorkdirError(
                f"{path} is a symbolic link (to {os.readlink(path)}); the lock file must be a "
                "plain file: remove the link, or pass another --workdir") from None
        raise WorkdirError(f"cannot open the lock file {path} ({exc.strerror}); pass another "
                           "--workdir") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = ("has other hard links" if stat.S_ISREG(info.st_mode)
                else "is not a plain file")
        raise WorkdirError(f"{path} {what}; the lock file must be a plain file of its own: "
                           "remove it, or pass another --workdir")
    return fd


@contextlib.contextmanager
def exclusive(workdir: str, process_index: int = 0) -> Iterator[None]:
    """Holds this process's lock on `workdir` (created if needed) for the block;
    WorkdirError at once if another trainer holds it, or if the lock file is a link."""
    if is_remote(workdir):  # no flock on object stores: the user keeps runs apart
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(os.path.abspath(workdir), f".train.lock.{process_index}")
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            raise WorkdirError(
                f"another trainer ({owner}) is using --workdir {os.path.abspath(workdir)}; "
                "wait for it, stop it, or pass another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
