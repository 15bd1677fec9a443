"""What the train-loop and sharding tests share: the config they run and how losses
are compared."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "tiny_train_config.py")
# The train-loop tests run the tiny config for CI time. The same tests take the demo,
# e.g. ASRTH_TRAIN_TEST_CONFIG=configs/demo.py ASRTH_TRAIN_TEST_STEPS=20 (issue 6's
# 20-step 2-process run), without code changes.
CONFIG = str(REPO / os.environ.get("ASRTH_TRAIN_TEST_CONFIG", TINY))
STEPS = int(os.environ.get("ASRTH_TRAIN_TEST_STEPS", "10"))
EVERY = max(2, STEPS // 3)  # checkpoint period: several saves, and steps between them
LOSS_KEYS = ("generator_total", "perceptual", "discriminator_gan", "equivariance_value",
             "keypoint_prior", "expression", "headpose", "feature_matching", "generator_gan")


def assert_losses_equal(a: dict, b: dict, rtol: float) -> None:
    """Objectives equal to `rtol`; each term equal to `rtol` of the objective it is
    part of (terms such as the GAN mean of D outputs sit near zero, where a relative
    bound would measure float32 summation order, not correctness)."""
    # Configs without a GAN (the demo) log no discriminator terms: compare what is logged,
    # and require both runs to log the same terms.
    logged = [key for key in LOSS_KEYS if key in b]
    assert [key for key in LOSS_KEYS if key in a] == logged and "generator_total" in logged
    for key in ("generator_total", "discriminator_gan"):
        if key in logged:
            np.testing.assert_allclose(a[key], b[key], rtol=rtol, err_msg=key)
    for key in logged:
        np.testing.assert_allclose(a[key], b[key], rtol=0,
                                   atol=rtol * abs(b["generator_total"]), err_msg=key)


def write_misspelt_config(folder: Path) -> Path:
    """A config file whose `get_config` sets the misspelt key `train.nun_steps`."""
    bad = folder / "bad.py"
    bad.write_text("from asrth_jax import config_lib\n"
                   "def get_config():\n"
                   "    c = config_lib.finalize(config_lib.base_config())\n"
                   "    c.train.nun_steps = 3\n"
                   "    return c\n")
    return bad
