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
from etils import epath
from flax import nnx

MODELS_ITEM = "models"


class CheckpointError(Exception):
    """A checkpoint that cannot be used as asked; the message is one line for the user."""


class DamagedCheckpointError(CheckpointError):
    """A step whose files are truncated or unreadable."""

    def __init__(self, directory: str, step: int, reason: str, hint: str = ""):
        self.directory, self.step, self.reason = directory, step, reason
        super().__init__(f"checkpoint step {step} in {directory} is damaged ({reason})"
                         + (f"; {hint}" if hint else ""))


class ModelMismatchError(CheckpointError):
    """A step saved by a model whose array shapes differ from the configured one."""

    def __init__(self, directory: str, step: int, details: str):
        self.directory, self.step, self.details = directory, step, details
        super().__init__(f"{directory} step {step} belongs to another model ({details}); "
                         "use the config it was made with, or another directory")


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The gist of a (possibly many-line TensorStore) error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _is_step_folder(path: epath.Path) -> bool:
    return path.name.isdigit() and path.is_dir() and (
        (path / "_CHECKPOINT_METADATA").exists() or (path / MODELS_ITEM).is_dir())


def _holds_steps(path: epath.Path) -> bool:
    return path.is_dir() and any(_is_step_folder(child) for child in path.iterdir())


def resolve(path: str) -> tuple[str, int | None]:
    """Where the steps are, and which step: a training workdir (steps under
    `checkpoints/`), its `checkpoints/` folder, a `convert --out` folder, or one step
    folder such as `WORKDIR/checkpoints/2000` (that step; otherwise the newest)."""
    root = epath.Path(path if "://" in path else os.path.abspath(path))
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint directory {root} does not exist")
    if not _holds_steps(root) and _holds_steps(root / "checkpoints"):
        return str(root / "checkpoints"), None
    if _is_step_folder(root) and not _holds_steps(root):
        return str(root.parent), int(root.name)
    return str(root), None


def _key_name(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_key_name(path): tuple(leaf.shape) for path, leaf in flat
            if hasattr(leaf, "shape")}


def saved_shapes(directory: str, step: int, item: str = MODELS_ITEM) -> dict[str, tuple]:
    """Array shapes of one saved item, read from its metadata (no array data)."""
    try:
        with ocp.StandardCheckpointer() as reader:
            metadata = reader.metadata(epath.Path(directory) / str(step) / item)
        shapes = _shapes(getattr(metadata, "item_metadata", metadata))
    except Exception as exc:  # noqa: BLE001 - any unreadable metadata means damage
        raise DamagedCheckpointError(directory, step, first_line(exc)) from None
    if not shapes:  # Orbax reads a truncated _METADATA as an empty tree
        raise DamagedCheckpointError(directory, step, f"{item}/_METADATA lists no arrays")
    return shapes


def check_same_model(directory: str, step: int, expected: Any,
                     item: str = MODELS_ITEM) -> None:
    """Raises ModelMismatchError naming differing arrays when the saved `item` of `step`
    was written by a model of other shapes than `expected` (a tree of arrays/structs)."""
    saved = saved_shapes(directory, step, item)
    wanted = _shapes(expected)
    differ = [k for k in wanted if k in saved and saved[k] != wanted[k]]
    only_saved = [k for k in saved if k not in wanted]
    only_config = [k for k in wanted if k not in saved]
    if not (differ or only_saved or only_config):
        return
    examples = "; ".join(f"{k} saved {saved[k]} vs configured {wanted[k]}"
                         for k in differ[:2])
    details = f"{len(differ)} arrays differ in shape"
    if only_saved or only_config:
        details += (f", {len(only_saved)} only in the checkpoint (e.g. "
                    f"{(only_saved or ['-'])[0]}), {len(only_config)} only in the config (e.g. "
                    f"{(only_config or ['-'])[0]})")
    if examples:
        details += f": {examples}"
    raise ModelMismatchError(directory, step, details)


def set_aside(directory: str, step: int) -> str:
    """Renames a damaged step folder out of Orbax's sight (`<step>.damaged`), keeping
    its files; returns the new path. Orbax takes only digit names as steps."""
    source = epath.Path(directory) / str(step)
    target = source.parent / f"{step}.damaged"
    suffix = 1
    while target.exists():
        suffix += 1
        target = source.parent / f"{step}.damaged.{suffix}"
    source.rename(target)
    return str(target)


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


def _restore_item(manager: ocp.CheckpointManager, step: int, args: Any) -> Any:
    return manager.restore(step, args=ocp.args.Composite(**{MODELS_ITEM: args}))[MODELS_ITEM]


def _loadable_steps(manager: ocp.CheckpointManager, steps: list[int]) -> list[int]:
    """Those of `steps` whose models item restores (read in full, then dropped)."""
    good = []
    for step in steps:
        try:
            _restore_item(manager, step, ocp.args.StandardRestore())
        except Exception:  # noqa: BLE001 - any failure to read marks the step unusable
            continue
        good.append(step)
    return good


def restore_models(directory: str, generator_side: nnx.Module,
                   discriminator: nnx.Module | None = None, step: int | None = None) -> int:
    """Restores the networks from the latest (or given) step; returns that step.

    `directory`: see `resolve`. A damaged step raises DamagedCheckpointError naming
    the steps that do load; a step of another model (with a discriminator target)
    raises ModelMismatchError.
    """
    directory, folder_step = resolve(directory)
    step = folder_step if step is None else step
    with ocp.CheckpointManager(directory, item_names=(MODELS_ITEM,)) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"{directory} holds no checkpoint; pass a training --workdir or the --out of "
                "`python -m asrth_jax.convert`")
        if step not in manager.all_steps():
            raise FileNotFoundError(f"{directory} holds no step {step}; it holds "
                                    f"{sorted(manager.all_steps())}")
        try:
            if discriminator is not None:
                target = model_state(generator_side, discriminator)
                check_same_model(directory, step, target)
                restore_args = ocp.args.StandardRestore(
                    jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
            else:  # inference needs no discriminator: read the saved tree as it is
                restore_args = ocp.args.StandardRestore()
            restored = _restore_item(manager, step, restore_args)
        except ModelMismatchError:
            raise
        except Exception as exc:  # noqa: BLE001 - Orbax/TensorStore raise many types
            reason = exc.reason if isinstance(exc, DamagedCheckpointError) else first_line(exc)
            others = _loadable_steps(
                manager, sorted((s for s in manager.all_steps() if s != step), reverse=True))
            hint = (f"steps that load: {others}; pick one with --checkpoint "
                    f"{os.path.join(directory, str(others[0]))}" if others
                    else "no other step in it loads")
            raise DamagedCheckpointError(directory, step, reason, hint) from None
    load_model_state(generator_side, discriminator, restored)
    return step
