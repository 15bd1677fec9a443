"""Loading a trained or released generator side for inference (animate, evaluate).

`load_generator_side` builds the configured generator side and fills it from an Orbax
checkpoint (`asrth_jax.checkpoints`) or a released PyTorch file (`asrth_jax.convert`);
anything missing or of another shape is one `ModelLoadError` line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from asrth_jax import errors
from asrth_jax.models import adasr


class ModelLoadError(errors.AsrthError, ValueError):
    """A checkpoint that is missing or does not match the config (one-line message)."""


def _shapes(tree: Any) -> dict[str, tuple]:
    return {k: tuple(getattr(v, "shape", np.shape(v))) for k, v in _leaves(tree)}


def load_generator_side(config: ml_collections.ConfigDict, *, checkpoint: str | None = None,
                        torch_checkpoint: str | None = None,
                        dtype: str | None = None) -> adasr.AdaSRGenerator:
    """Builds the generator side of `config.model` and loads weights into it.

    `checkpoint`: an Orbax directory (training workdir or `asrth_jax.convert --out`);
    `torch_checkpoint`: a released `.pth.tar`. Raises ModelLoadError with one line
    when the file is missing or its shapes do not match the config.
    """
    import os

    if (checkpoint is None) == (torch_checkpoint is None):
        raise ModelLoadError("pass exactly one of --checkpoint DIR and --torch-checkpoint FILE")
    if checkpoint is not None and not os.path.isdir(checkpoint):
        raise ModelLoadError(f"checkpoint directory {os.path.abspath(checkpoint)} does not "
                             "exist")
    if torch_checkpoint is not None and not os.path.isfile(torch_checkpoint):
        raise ModelLoadError(f"torch checkpoint {torch_checkpoint} does not exist")
    # Abstract module (shapes only): random initialisation would be wasted work.
    model = adasr.abstract_generator(config.model, dtype=dtype)
    if torch_checkpoint is not None:
        from asrth_jax import convert

        if not os.path.isfile(torch_checkpoint):
            raise ModelLoadError(f"torch checkpoint {torch_checkpoint} does not exist")
        try:
            ckpt = convert.load_torch_file(torch_checkpoint)
        except convert.TorchFileError as exc:
            raise ModelLoadError(str(exc).removeprefix("error: ")) from None
        if not isinstance(ckpt, dict):
            raise ModelLoadError(f"{torch_checkpoint} is not a dict of state dicts")
        try:
            convert.convert_released_checkpoint(ckpt, model, None)
        except convert.ConversionError as exc:
            lines = str(exc).splitlines()
            more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
            raise ModelLoadError(f"{torch_checkpoint} does not match the config's model: "
                                 f"{lines[0]}{more}") from None
        return _check_loaded(model, torch_checkpoint)

    from asrth_jax import checkpoints

    expected = _shapes(nnx.to_pure_dict(nnx.state(model)))
    try:
        checkpoints.restore_models(checkpoint, model)
    except (FileNotFoundError, checkpoints.CheckpointError) as exc:
        raise ModelLoadError(str(exc)) from None
    except (KeyError, ValueError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise ModelLoadError(f"checkpoint {checkpoint} does not match the config's model: "
                             f"{first}") from None
    got = _shapes(nnx.to_pure_dict(nnx.state(model)))
    bad = [k for k in expected if got.get(k) != expected[k]]
    if bad:
        raise ModelLoadError(
            f"checkpoint {checkpoint} does not match the config's model: {len(bad)} arrays "
            f"differ in shape, e.g. {bad[0]} {got.get(bad[0])} vs {expected[bad[0]]}")
    return _check_loaded(model, checkpoint)


def _check_loaded(model: adasr.AdaSRGenerator, source: str) -> adasr.AdaSRGenerator:
    """Every variable must hold an array (none left abstract by a partial checkpoint)."""
    flat = nnx.to_pure_dict(nnx.state(model))
    missing = [k for k, v in _leaves(flat) if isinstance(v, jax.ShapeDtypeStruct)]
    if missing:
        raise ModelLoadError(f"{source} does not match the config's model: it lacks "
                             f"{len(missing)} arrays, e.g. {missing[0]}")
    return model


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}/{key}" if prefix else str(key))
    else:
        yield prefix, tree
