"""Model checkpoints on disk: one Orbax layout for trained and converted weights.

A checkpoint directory is an Orbax `CheckpointManager` directory. Each step holds the
item `models` (pure-dict NNX state of the generator side and the discriminator);
training steps add `optimizer`, `meta` and `data` (`TrainCheckpointer`, which maps the
train state to these items and back; this module owns the whole layout). A
converted release checkpoint is step 0 with `models` only, so `animate`, `evaluate`
and `train` (for fine-tuning) restore it the same way.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from asrth_jax import errors, sharding
from data_pipelines import state as data_state

if TYPE_CHECKING:
    from asrth_jax.train_state import TrainState

MODELS_ITEM = "models"
# The `optimizer` item's key of each network's optimiser state (the `models` item keys
# networks by their `TrainState` field names); names on disk, kept as the first
# training checkpoints wrote them.
OPTIMIZER_KEYS = {"generator_side": "gen_opt", "discriminator": "disc_opt"}


CheckpointError = errors.CheckpointError  # re-exported beside its subclasses below


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint (or not the step asked for) where the path points."""


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


def storage_reason(exc: BaseException) -> str:
    """Why a write failed, in the operating system's words where the (many-line,
    path-laden) TensorStore error carries them: e.g. "No space left on device"."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    match = re.search(r"\[os_error_code='?(\d+)", str(exc))
    return os.strerror(int(match.group(1))) if match else first_line(exc)


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
        raise CheckpointNotFoundError(f"checkpoint directory {root} does not exist")
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
            raise CheckpointNotFoundError(
                f"{directory} holds no checkpoint; pass a training --workdir or the --out of "
                "`python -m asrth_jax.convert`")
        if step not in manager.all_steps():
            raise CheckpointNotFoundError(f"{directory} holds no step {step}; it holds "
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


# ==================================================================== training runs
def state_to_items(state: TrainState) -> dict[str, Any]:
    """Train state -> checkpoint items `models` (the layout of `model_state`, so animate
    and evaluate read training runs directly), `optimizer` and `meta`."""
    networks = state.networks()
    return {
        MODELS_ITEM: {name: nnx.merge_state(network.params, network.rest).to_pure_dict()
                      for name, network in networks.items()},
        "optimizer": {OPTIMIZER_KEYS[name]: network.opt for name, network in networks.items()},
        "meta": {"step": state.step, "rng": state.rng},
    }


def items_to_state(items: dict[str, Any], abstract_state: TrainState) -> TrainState:
    """Restored `state_to_items` output -> train state (structure from `abstract_state`)."""
    networks = {}
    for name, network in abstract_state.networks().items():
        merged = nnx.merge_state(network.params, network.rest)
        nnx.replace_by_pure_dict(merged, items[MODELS_ITEM][name])
        params, rest = nnx.split_state(merged, nnx.Param, ...)
        networks[name] = network.replace(params=params, rest=rest,
                                         opt=items["optimizer"][OPTIMIZER_KEYS[name]])
    return abstract_state.replace(step=items["meta"]["step"], rng=items["meta"]["rng"],
                                  **networks)


class ResumeError(CheckpointError):
    """A training workdir whose checkpoints cannot be resumed (one line)."""


class SaveError(CheckpointError):
    """A training checkpoint that could not be written (a full disk, ...): training
    stops at once rather than running on with nothing saved (one line)."""

    def __init__(self, directory: str, step: int, reason: str, resume_hint: str):
        self.directory, self.step = directory, step
        super().__init__(f"saving checkpoint step {step} in {directory} failed ({reason}); "
                         f"training stopped: {resume_hint}")


class TrainCheckpointer:
    """A training run's checkpoints: Orbax `CheckpointManager` over the items `models`,
    `optimizer`, `meta` (`state_to_items`) and `data` (the Grain iterator's position),
    saved asynchronously, the newest `keep` kept. A save that fails in the background
    surfaces as SaveError at the next `check_saved` (called every step), `save` or
    `close`."""

    ITEMS = (MODELS_ITEM, "optimizer", "meta", "data")

    def __init__(self, workdir: str, keep: int, abstract_state: TrainState, data_iterator):
        """`abstract_state`: shapes, dtypes and shardings to restore into."""
        self.workdir = workdir
        self.abstract_state = abstract_state
        self.data_iterator = data_iterator
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=True, save_interval_steps=1)
        self.directory = (os.path.join(workdir, "checkpoints") if "://" in workdir
                          else os.path.abspath(os.path.join(workdir, "checkpoints")))
        self.manager = ocp.CheckpointManager(self.directory, item_names=self.ITEMS,
                                             options=options)
        self._unconfirmed: int | None = None  # the step saving in the background

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState) -> None:
        """Starts saving `step` in the background (after the previous save is confirmed);
        SaveError when this or the previous save fails."""
        self.check_saved(wait=True)
        items = {k: ocp.args.StandardSave(v) for k, v in state_to_items(state).items()}
        try:
            self.manager.save(step, args=ocp.args.Composite(
                **items, data=data_state.CheckpointSave(self.data_iterator)), force=True)
        except Exception as exc:  # noqa: BLE001 - Orbax/TensorStore/OS raise many types
            raise self._failed(step, storage_reason(exc)) from None
        self._unconfirmed = step

    def check_saved(self, wait: bool = False) -> None:
        """SaveError if the background save has failed. Without `wait` it returns at
        once while that save is still being written (cheap enough for every step)."""
        step = self._unconfirmed
        if step is None or (not wait and self.manager.is_saving_in_progress()):
            return
        self._unconfirmed = None
        try:
            self.manager.wait_until_finished()  # re-raises the background failure
        except Exception as exc:  # noqa: BLE001 - Orbax/TensorStore/OS raise many types
            raise self._failed(step, storage_reason(exc)) from None
        if not (epath.Path(self.directory) / str(step)).is_dir():
            raise self._failed(step, "Orbax did not finalise its folder")

    def _failed(self, step: int, reason: str) -> SaveError:
        return SaveError(self.directory, step, reason, self.resume_hint())

    def last_good_step(self) -> int | None:
        """The newest step whose save is confirmed (finalised on disk)."""
        good = [s for s in self.manager.all_steps() if s != self._unconfirmed
                and (epath.Path(self.directory) / str(s)).is_dir()]
        return max(good) if good else None

    def resume_hint(self) -> str:
        """Where a stopped run resumes from, for its one-line error."""
        step = self.last_good_step()
        if step is None:
            return "no checkpoint was saved yet"
        return f"the last good checkpoint is step {step} (the same command resumes from it)"

    def restore(self, step: int) -> TrainState:
        items = {k: ocp.args.StandardRestore(v)
                 for k, v in state_to_items(self.abstract_state).items()}
        restored = self.manager.restore(step, args=ocp.args.Composite(
            **items, data=data_state.CheckpointRestore(self.data_iterator)))
        return items_to_state({k: restored[k] for k in items}, self.abstract_state)

    def restore_newest_intact(self) -> tuple[int | None, TrainState | None]:
        """(step, state) of the newest step that restores; (None, None) when none is
        saved. Newer damaged steps are logged and renamed `<step>.damaged` (kept for the
        user, out of the way of the saves that will reach their step numbers again)."""
        expected = state_to_items(self.abstract_state)[MODELS_ITEM]
        damaged: list[tuple[int, str]] = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            state, reason = None, None
            try:
                check_same_model(self.directory, step, expected)
                state = self.restore(step)
            except ModelMismatchError as exc:
                raise ResumeError(
                    f"--workdir {self.workdir} holds checkpoints of another model (step "
                    f"{step}: {exc.details}); resume with the config it was trained with, or "
                    "pass a new --workdir") from None
            except Exception as exc:  # noqa: BLE001 - Orbax/TensorStore raise many types
                reason = (exc.reason if isinstance(exc, DamagedCheckpointError)
                          else first_line(exc))
            if _any_process(reason is not None):  # every process resumes the same step
                damaged.append((step, reason or "unreadable on another process"))
                continue
            self._set_aside(damaged, step)
            return step, state
        if damaged:
            raise ResumeError(
                f"every checkpoint in {self.directory} is damaged ("
                + "; ".join(f"step {s}: {r}" for s, r in damaged)
                + "); nothing was deleted: move the folder aside to start afresh")
        return None, None

    def _set_aside(self, damaged: list[tuple[int, str]], resumed: int) -> None:
        if not damaged:
            return
        for step, reason in damaged:
            kept = os.path.join(self.directory, f"{step}.damaged")
            if jax.process_index() == 0:
                kept = set_aside(self.directory, step)
            logging.warning("checkpoint step %d in %s is damaged (%s); kept it as %s and "
                            "resuming from step %d", step, self.directory, reason, kept,
                            resumed)
        sharding.process_barrier("damaged_checkpoints_set_aside")
        self.manager.reload()

    def close(self) -> None:
        """Waits for the last save: SaveError if it failed (the manager is closed
        either way)."""
        try:
            self.check_saved(wait=True)
        finally:
            self.manager.close()


def _any_process(flag: bool) -> bool:
    """`flag` on any process (all processes get the same answer)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.array(flag))))
