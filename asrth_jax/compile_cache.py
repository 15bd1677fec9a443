"""JAX's persistent compilation cache, on by default for every command.

A second `train`, `evaluate`, `animate`, `benchmark` or `app` start loads each program
it compiled before from disk instead of compiling it again (minutes on CPU, and a GPU's
autotuning results with them). The cache lives in `$ASRTH_JAX_CACHE_DIR`, else
`$XDG_CACHE_HOME/asrth_jax/jax`, else `~/.cache/asrth_jax/jax`; each command's
`--no-compile-cache` (train: `--nocompile_cache`) turns it off for that run.

Entries are keyed by the program, the JAX/XLA version and the device, so a cache shared
by several machines or versions only ever serves a program compiled for the same one.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import jax

ENV_DIR = "ASRTH_JAX_CACHE_DIR"
# JAX's monitoring events (jax/_src/dispatch.py, compiler.py).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
# Programs that compile faster than this are not worth a disk round-trip.
MIN_COMPILE_SECONDS = 0.5


def default_dir() -> Path:
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "asrth_jax" / "jax"


def enable(directory: str | os.PathLike | None = None) -> Path | None:
    """Turns the persistent cache on in `directory` (default `default_dir()`); returns
    it, or None (with a warning, the run goes on uncached) when it cannot be created.
    A cache directory the user already configured for JAX (`JAX_COMPILATION_CACHE_DIR`)
    is kept."""
    configured = jax.config.jax_compilation_cache_dir
    path = Path(configured) if configured and directory is None else Path(
        directory or default_dir())
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logging.warning("compilation cache off: cannot create %s (%s)", path, exc.strerror)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path


def add_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-compile-cache", dest="compile_cache", action="store_false",
                        help="do not read or write the persistent compilation cache "
                        f"(default: on, in ${ENV_DIR} or ~/.cache/asrth_jax/jax)")


def enable_if(on: bool) -> Path | None:
    """`enable()` when the command's cache flag is on (its default)."""
    return enable() if on else None


class CompileMeter:
    """What XLA compiled in this process since the meter was made: seconds spent in
    backend compiles (a program served from the persistent cache costs none) and the
    programs the cache served. Reads JAX's monitoring events; a process keeps its
    meters' listeners to its end, so make one per process (a CLI run, a benchmark)."""

    def __init__(self) -> None:
        self.compile_s = 0.0
        self.compiles = 0
        self.cache_hits = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_duration(self, event: str, duration: float, **_) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.compile_s += duration
            self.compiles += 1

    def _on_event(self, event: str, **_) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1

    def summary(self) -> dict[str, float | int]:
        return {"xla_compile_s": self.compile_s, "xla_compiles": self.compiles,
                "compile_cache_hits": self.cache_hits}
