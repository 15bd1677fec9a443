"""Model checkpoints on disk: one Orbax layout for trained and converted weights.

A checkpoint directory is an Orbax `CheckpointManager` directory. Each step holds the
item `models` (pure-dict NNX state of the generator side and the discriminator);
training steps add `optimizer`, `meta` and `data` (see `asrth_jax/train.py`). A
converted release checkpoint is step 0 with `models` only, so `animate`, `evaluate`
and `train` (for fine-tuning) restore it the same way.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

MODELS_ITEM = "models"


def model_state(generator_side: nnx.Module, discriminator: nnx.Module) -> dict[str, Any]:
    """Everything the networks hold (params, BatchNorm stats, spectral vectors)."""
    return {
        "generator_side": nnx.state(generator_side).to_pure_dict(),
        "discriminator": nnx.state(discriminator).to_pure_dict(),
    }


def load_model_state(generator_side: nnx.Module, discriminator: nnx.Module | None,
                     state: dict[str, Any]) -> None:
    """Writes a `model_state` dict back into live modules."""
    pairs = [(generator_side, "generator_side")]
    if discriminator is not None:
        pairs.append((discriminator, "discriminator"))
    for module, key in pairs:
        target = nnx.state(module)
        nnx.replace_by_pure_dict(target, state[key])
        nnx.update(module, target)


def save_models(directory: str, generator_side: nnx.Module, discriminator: nnx.Module,
                step: int = 0, overwrite: bool = False) -> str:
    """Writes a models-only checkpoint at `step`; refuses to clobber an existing one."""
    directory = os.path.abspath(directory)
    with ocp.CheckpointManager(directory, item_names=(MODELS_ITEM,)) as manager:
        if step in manager.all_steps():
            if not overwrite:
                raise FileExistsError(
                    f"{directory} already holds step {step}; choose another --out or pass "
                    "--overwrite")
            manager.delete(step)
        manager.save(step, args=ocp.args.Composite(
            **{MODELS_ITEM: ocp.args.StandardSave(model_state(generator_side, discriminator))}))
        manager.wait_until_finished()
    return directory


def restore_models(directory: str, generator_side: nnx.Module,
                   discriminator: nnx.Module | None = None, step: int | None = None) -> int:
    """Restores the networks from the latest (or given) step; returns that step."""
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    with ocp.CheckpointManager(directory, item_names=(MODELS_ITEM,)) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"{directory} holds no checkpoint; pass a training --workdir or the --out of "
                "`python -m asrth_jax.convert`")
        if discriminator is not None:
            target = model_state(generator_side, discriminator)
            restore_args = ocp.args.StandardRestore(
                jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
        else:  # inference needs no discriminator: read the saved tree as it is
            restore_args = ocp.args.StandardRestore()
        restored = manager.restore(step, args=ocp.args.Composite(
            **{MODELS_ITEM: restore_args}))[MODELS_ITEM]
    load_model_state(generator_side, discriminator, restored)
    return step
