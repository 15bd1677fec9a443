import os
import sys
import tempfile

import pytest

# Tests import helpers that sit beside them (e.g. `reference_torch`).
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CLIs turn the persistent compilation cache on (`asrth_jax.compile_cache`): tests that
# call them share one throwaway cache instead of the user's ~/.cache.
os.environ.setdefault("ASRTH_JAX_CACHE_DIR", tempfile.mkdtemp(prefix="asrth_jax_test_cache_"))


@pytest.fixture(scope="session")
def jax_env(tmp_path_factory):
    """Environment for JAX subprocesses: CPU, one shared persistent compile cache."""
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONUNBUFFERED="1")
    return env
