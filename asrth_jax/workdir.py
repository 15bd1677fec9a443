"""Guards of a training run directory: usable before anything is written, one trainer.

The lock is `fcntl.flock` on `WORKDIR/.train.lock.<process index>`, held for the life
of the trainer: the kernel drops it when the process ends in any way (kill -9
included), so a crashed run never leaves it stuck. One lock file per process index
lets the processes of one multi-process run coexist while a second run (whose
process 0 wants the same file as the first's) is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
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


@contextlib.contextmanager
def exclusive(workdir: str, process_index: int = 0) -> Iterator[None]:
    """Holds this process's lock on `workdir` (created if needed) for the block;
    WorkdirError at once if another trainer holds it."""
    if is_remote(workdir):  # no flock on object stores: the user keeps runs apart
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(os.path.abspath(workdir), f".train.lock.{process_index}")
    handle = open(path, "a+")  # noqa: SIM115 - held open for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise WorkdirError(
                f"another trainer ({owner}) is using --workdir {os.path.abspath(workdir)}; "
                "wait for it, stop it, or pass another --workdir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock
