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
CACHE_LOAD_EVENT = "/jax/compilation_cache/cache_retrieval_time_sec"
# Every program is kept (JAX's default keeps those over 1 s): the many small ones of a
# start (eager initialisers, shardings) add up to seconds, and reading one back costs ms.
MIN_COMPILE_SECONDS = 0.0


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
    """What XLA compiled in this process since the meter was made: seconds spent
    compiling, seconds spent loading programs from the persistent cache instead, and how
    many programs each. Reads JAX's monitoring events (JAX's own backend-compile duration
    includes a cache load, so the loads are subtracted); a process keeps its meters'
    listeners to its end, so make one per process (a CLI run, a benchmark)."""

    def __init__(self) -> None:
        self._backend_s = 0.0
        self.load_s = 0.0
        self.programs = 0
        self.cache_hits = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_duration(self, event: str, duration: float, **_) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self._backend_s += duration
            self.programs += 1
        elif event == CACHE_LOAD_EVENT:
            self.load_s += duration

    def _on_event(self, event: str, **_) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1

    @property
    def compile_s(self) -> float:
        return max(self._backend_s - self.load_s, 0.0)

    def summary(self) -> dict[str, float | int]:
        return {"xla_compile_s": self.compile_s, "xla_cache_load_s": self.load_s,
                "xla_programs": self.programs, "compile_cache_hits": self.cache_hits}
