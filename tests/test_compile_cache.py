"""The persistent compilation cache: on by default, a second start compiles (almost)
nothing, and `--no-compile-cache` turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from animate_fixtures import REAL, tiny_checkpoint

from asrth_jax import compile_cache

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "tiny_train_config.py")


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(ASRTH_JAX_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return env


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_default_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.ENV_DIR, str(tmp_path / "mine"))
    assert compile_cache.default_dir() == tmp_path / "mine"
    monkeypatch.delenv(compile_cache.ENV_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == tmp_path / "xdg" / "asrth_jax" / "jax"


def test_an_unwritable_cache_dir_leaves_the_run_uncached(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert compile_cache.enable(blocker / "cache") is None
    assert "compilation cache off" in caplog.text


@pytest.mark.slow
def test_second_benchmark_compiles_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "asrth_jax.benchmark", "--config", TINY, "--batch", "2",
               "--compile-only"]

    def run(*extra: str) -> dict:
        done = subprocess.run(command + list(extra), env=_env(cache), capture_output=True,
                              text=True, check=True, cwd=REPO)
        return _last_json(done.stdout)

    first = run()
    assert any(cache.iterdir()), "the first run wrote no cache entry"
    second = run()
    # Every program of the second start comes from the cache: it compiles (almost)
    # nothing; reading the programs back is reported apart (`xla_cache_load_s`).
    assert first["compile_cache_hits"] == 0
    assert second["compile_cache_hits"] == first["xla_programs"] == second["xla_programs"]
    assert second["xla_compile_s"] <= 0.1 * first["xla_compile_s"]
    assert second["train_compile_s"] < first["train_compile_s"]
    # The census reads a program loaded from the cache as it reads a fresh one.
    assert second["train_kernels"] == first["train_kernels"]
    assert 0 < first["train_kernels"]["distinct"] < first["train_kernels"]["kernels"]
    uncached = run("--no-compile-cache")
    assert uncached["compile_cache_hits"] == 0
    assert uncached["xla_compile_s"] > 0.5 * first["xla_compile_s"]


@pytest.mark.slow
def test_second_animate_compiles_from_the_cache(tmp_path):
    files = tiny_checkpoint(tmp_path)
    cache = tmp_path / "cache"
    script = ("import json, sys; from asrth_jax import animate, compile_cache; "
              "meter = compile_cache.CompileMeter(); animate.main(sys.argv[1:]); "
              "print(json.dumps(meter.summary()))")

    def run(out: str) -> dict:
        args = ["--checkpoint", files["ckpt"], "--config", files["config"],
                "--source", str(REAL / "demo_img_1.jpg"), "--driving", str(REAL / "529_2.mp4"),
                "--max-frames", "4", "--batch-size", "4", "--quiet",
                "--out", str(tmp_path / out)]
        done = subprocess.run([sys.executable, "-c", script, *args], env=_env(cache),
                              capture_output=True, text=True, check=True, cwd=REPO)
        return _last_json(done.stdout)

    first = run("first.mp4")
    second = run("second.mp4")
    assert first["xla_compile_s"] > 0 and first["compile_cache_hits"] == 0
    assert second["compile_cache_hits"] == first["xla_programs"]
    assert second["xla_compile_s"] <= 0.1 * first["xla_compile_s"]
