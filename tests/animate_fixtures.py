"""A tiny random checkpoint and config on disk, as `animate` and the app take them."""

from __future__ import annotations

from pathlib import Path

from test_inference import random_models, tiny_config_file, tiny_model_config

from asrth_jax import checkpoints

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def tiny_checkpoint(root: Path) -> dict[str, str]:
    """{'config': tiny 64x64 config file, 'ckpt': Orbax dir of random weights} under root."""
    config = tiny_config_file(root / "tiny.py")
    gen, disc = random_models(tiny_model_config(), seed=0)
    ckpt = checkpoints.save_models(str(root / "ckpt"), gen, disc)
    return {"config": str(config), "ckpt": ckpt}
