"""Real small filesystems for the tests of full and read-only disks: a tmpfs needs root
to mount; without it the tests skip (or simulate, where they say so)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def try_mount_tmpfs(folder: Path, options: str) -> bool:
    """Mounts a tmpfs with `options` (e.g. 'size=4m', 'ro,size=1m') on `folder`, made if
    needed; False when not root or the mount fails."""
    folder.mkdir(parents=True, exist_ok=True)
    return os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True).returncode == 0


def unmount(folder: Path) -> None:
    # Lazily: a writer of the test (TensorBoard's) may still hold a file open there.
    subprocess.run(["umount", "--lazy", str(folder)], check=True)


@contextlib.contextmanager
def small_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """`folder` as a tmpfs mounted with `options` for the block; skips without root."""
    if not try_mount_tmpfs(folder, options):
        pytest.skip(f"needs root to mount a tmpfs ({options})")
    try:
        yield folder
    finally:
        unmount(folder)
