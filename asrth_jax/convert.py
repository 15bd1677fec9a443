"""Weight converters: released AdaSR PyTorch checkpoints, VGG19 and HopeNet.

    python -m asrth_jax.convert --torch-checkpoint mix-train.pth.tar \
        --config configs/hdtf_512.py --out checkpoints/adasr_512
    python -m asrth_jax.convert --vgg19 vgg19-dcbb9e9d.pth --out weights/vgg19.npz
    python -m asrth_jax.convert --hopenet hopenet_robust_alpha1.pkl --out weights/hopenet.npz

PyTorch is needed only to read `.pth` files (`pip install '.[dev]'`). They are read as
untrusted data (`asrth_jax.torch_files`): only tensors, numbers, strings and containers.
--out is never replaced without --overwrite, and --overwrite replaces only a converted
checkpoint (never a training run's steps) or a .npz. Every output is written beside
--out and swapped in once whole: a kill or a full disk leaves the old one intact. --out
is checked before the (large) input is read.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from asrth_jax import cli_args, errors
from asrth_jax.torch_files import TorchFileError, as_array, read_torch_file

# Torch Sequential children named like '3dr0', 'down1', 'b5_3' become list indices.
_SEQUENTIAL_CHILD = re.compile(r"^(?:3dr|2dr|down|up|b\d_)(\d+)$")
_IGNORED_LEAVES = ("num_batches_tracked",)
# Fixed buffers in the release that our modules compute instead of storing.
_IGNORED_KEYS = {"kp_detector": ("down.weight",)}

TORCH_NETWORKS = ("generator", "kp_detector", "he_estimator", "discriminator")


class ConversionError(errors.AsrthError, ValueError):
    """Raised with every mismatch of a conversion listed, one per line."""


def load_torch_file(path: str) -> Any:
    """A released `.pth`/`.pkl` file as nested dicts of numpy arrays, read as untrusted data.

    Raises TorchFileError (one line) for a missing file, a non-PyTorch file, or one that
    holds anything but plain weights.
    """
    return read_torch_file(path)


def torch_key_to_path(key: str, scales: tuple = (1,)) -> tuple[tuple, str]:
    """Maps a torch state-dict key to (our module path, torch leaf name)."""
    parts = key.split(".")
    leaf = parts.pop()
    path: list[Any] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        match = _SEQUENTIAL_CHILD.match(part)
        if match:
            path.append(int(match.group(1)))
        elif part.isdigit():
            path.append(int(part))
        elif part == "discs":  # ModuleDict keyed by str(scale) -> list in scale order
            scale_key = parts[i + 1].replace("-", ".")
            index = [str(s) for s in scales].index(scale_key)
            path.extend(["discs", index])
            i += 1
        else:
            path.append(part)
            if part == "mlp_shared":  # Sequential(conv, ReLU): our conv is the module
                i += 1
        i += 1
    return tuple(path), leaf


def _spectral_v_to_ours(v: np.ndarray, kernel_oihw: np.ndarray) -> np.ndarray:
    # torch flattens the weight as (out, in*kh*kw); ours flattens HWIO as (kh*kw*in).
    o, i, kh, kw = kernel_oihw.shape
    return v.reshape(i, kh, kw).transpose(1, 2, 0).reshape(-1)


def _convert_leaf(leaf: str, value: np.ndarray, sd: dict, key: str) -> list[tuple[str, np.ndarray]]:
    if leaf in ("weight", "weight_orig"):
        if value.ndim == 5:
            return [("kernel", value.transpose(2, 3, 4, 1, 0))]
        if value.ndim == 4:
            return [("kernel", value.transpose(2, 3, 1, 0))]
        if value.ndim == 2:
            return [("kernel", value.T)]
        return [("scale", value)]
    if leaf == "bias":
        return [("bias", value)]
    if leaf == "running_mean":
        return [("mean", value)]
    if leaf == "running_var":
        return [("var", value)]
    if leaf == "weight_u":
        return [("u", value)]
    if leaf == "weight_v":
        orig = np.asarray(sd.get(key[: -len("weight_v")] + "weight_orig"))
        if orig.ndim != 4 or value.size != int(np.prod(orig.shape[1:])):
            raise ValueError(f"{key} does not fit its weight_orig {orig.shape}")
        return [("v", _spectral_v_to_ours(value, orig))]
    raise KeyError(leaf)


def convert_state_dict(network: str, state_dict: dict[str, np.ndarray], module: nnx.Module,
                       scales: tuple = (1,)) -> None:
    """Loads a released torch state dict into `module` in place.

    Every unknown key, missing key and shape mismatch is collected and reported at once.
    """
    target = dict(nnx.to_flat_state(nnx.state(module)))
    problems: list[str] = []
    seen: set[tuple] = set()
    updates: dict[tuple, np.ndarray] = {}
    ignored = _IGNORED_KEYS.get(network, ())
    for key, value in state_dict.items():
        if not isinstance(key, str):
            problems.append(f"{network}: key {key!r} is not a parameter name")
            continue
        if key.endswith(_IGNORED_LEAVES) or key in ignored:
            continue
        path, leaf = torch_key_to_path(key, scales)
        try:
            array = as_array(value, f"{network}: {key}")
        except TorchFileError as exc:
            problems.append(str(exc))
            continue
        try:
            converted = _convert_leaf(leaf, array, state_dict, key)
        except KeyError:
            problems.append(f"{network}: unknown key {key}")
            continue
        except ValueError as exc:
            problems.append(f"{network}: {exc}")
            continue
        for name, array in converted:
            full = path + (name,)
            if full not in target:
                problems.append(f"{network}: unknown key {key} (no {'/'.join(map(str, full))})")
                continue
            expected = tuple(target[full].get_value().shape)
            if tuple(array.shape) != expected:
                problems.append(f"{network}: shape mismatch for {key}: checkpoint "
                                f"{tuple(array.shape)} vs model {expected}")
                continue
            seen.add(full)
            updates[full] = array
    for path in sorted(set(target) - seen, key=str):
        problems.append(f"{network}: missing key for {'/'.join(map(str, path))}")
    if problems:
        raise ConversionError("\n".join(problems))
    for path, array in updates.items():
        variable = target[path]
        variable.set_value(np.asarray(array, dtype=variable.get_value().dtype))


def check_released_layout(checkpoint: Any) -> None:
    """A released file is a dict of state dicts; anything else is one ConversionError line."""
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"checkpoint is a {type(checkpoint).__name__}, not a dict with "
                              f"{list(TORCH_NETWORKS)}")
    missing = [n for n in TORCH_NETWORKS[:3] if n not in checkpoint]
    if missing:
        raise ConversionError(
            f"checkpoint lacks {missing}; expected a dict with {list(TORCH_NETWORKS)}")
    not_dicts = [f"{n} is a {type(checkpoint[n]).__name__}" for n in TORCH_NETWORKS
                 if n in checkpoint and not isinstance(checkpoint[n], dict)]
    if not_dicts:
        raise ConversionError(f"checkpoint entries must be state dicts, but "
                              f"{', '.join(not_dicts)}")


def convert_released_checkpoint(checkpoint: dict[str, Any], generator_side: nnx.Module,
                                discriminator: nnx.Module | None) -> None:
    """Loads all networks of a released `mix-train.pth.tar` dict; errors listed together."""
    check_released_layout(checkpoint)
    problems = []
    pairs = [(n, getattr(generator_side, n)) for n in TORCH_NETWORKS[:3]]
    if discriminator is not None and "discriminator" in checkpoint:
        pairs.append(("discriminator", discriminator))
    for name, module in pairs:
        scales = getattr(module, "scales", (1,))
        try:
            convert_state_dict(name, checkpoint[name], module, scales)
        except ConversionError as exc:
            problems.append(str(exc))
    if problems:
        raise ConversionError("\n".join(problems))


class OutputError(errors.AsrthError, ValueError):
    """--out names something that must not be written over (one line)."""


def _is_checkpoint_dir(path: str) -> bool:
    # An Orbax CheckpointManager directory holds only step folders named by number.
    entries = os.listdir(path)
    return all(e.isdigit() and os.path.isdir(os.path.join(path, e)) for e in entries)


def _training_steps(path: str) -> list[int]:
    """Step folders of `path` that hold more than the networks (a training run's
    optimizer, counters or data position): work a conversion must never replace."""
    steps = []
    for entry in os.listdir(path):
        folder = os.path.join(path, entry)
        if entry.isdigit() and os.path.isdir(folder) and any(
                item in os.listdir(folder) for item in TRAINING_ITEMS):
            steps.append(int(entry))
    return sorted(steps)


# The items a training step adds to `models` (checkpoints.TrainCheckpointer.ITEMS).
TRAINING_ITEMS = ("optimizer", "meta", "data")


def check_checkpoint_out(out: str, overwrite: bool) -> None:
    """Refuses an --out that holds anything, unless --overwrite and it is a converted
    checkpoint; refuses a training run's steps even with --overwrite, and an --out that
    cannot be created (a file as parent, a read-only folder).

    Orbax silently skips saving step 0 into a directory that already has a later step,
    so writing into a non-empty directory is never done in place.
    """
    if not os.path.exists(out):
        cli_args.check_parent_writable(Path(out), "--out")
        return
    if not os.path.isdir(out):
        raise OutputError(f"--out {out} is a file, not a checkpoint directory; choose "
                          "another --out")
    entries = sorted(os.listdir(out))
    if not entries:
        return
    if training := _training_steps(out):
        shown = ", ".join(map(str, training[:3])) + (" ..." if len(training) > 3 else "")
        raise OutputError(f"--out {out} holds training step(s) {shown} of a run (with its "
                          "optimizer and data state), which a conversion never replaces; "
                          "choose another --out")
    if not overwrite:
        raise OutputError(f"--out {out} already holds {entries[0]}"
                          f"{f' and {len(entries) - 1} more' if len(entries) > 1 else ''}; "
                          "choose another --out or pass --overwrite to replace it")
    if not _is_checkpoint_dir(out):
        odd = next(e for e in entries if not (e.isdigit()
                                              and os.path.isdir(os.path.join(out, e))))
        raise OutputError(f"--out {out} holds {odd}, which is not part of a checkpoint; "
                          "--overwrite replaces only a checkpoint directory, so choose "
                          "another --out")
    parent = os.path.dirname(out)
    if not os.access(parent, os.W_OK | os.X_OK):  # the new checkpoint is written beside
        raise OutputError(f"--out {out}: its folder {parent} is not writable; choose "
                          "another --out")


def write_checkpoint(out: str, generator_side: nnx.Module, discriminator: nnx.Module) -> str:
    """Saves step 0 to `out`, replacing a converted checkpoint there only once the new
    one is whole (a training run's steps are refused: `check_checkpoint_out`)."""
    out = os.path.abspath(out)
    if not os.path.isdir(out) or not os.listdir(out):
        return _save_models(out, generator_side, discriminator)
    check_checkpoint_out(out, overwrite=True)
    tag = f"{os.getpid()}"
    fresh, old = f"{out}.converting-{tag}", f"{out}.replaced-{tag}"
    try:
        _save_models(fresh, generator_side, discriminator, shown_as=out)
        os.rename(out, old)
        os.rename(fresh, out)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _save_models(directory: str, generator_side: nnx.Module, discriminator: nnx.Module,
                 shown_as: str | None = None) -> str:
    """checkpoints.save_models; a failed write (full disk, ...) is one OutputError line."""
    from asrth_jax import checkpoints

    try:
        return checkpoints.save_models(directory, generator_side, discriminator)
    except Exception as exc:  # noqa: BLE001 - Orbax/TensorStore raise many types
        shutil.rmtree(directory, ignore_errors=True)
        kept = f"; {shown_as} is unchanged" if shown_as else ""
        raise OutputError(f"cannot write the checkpoint to {shown_as or directory} "
                          f"({checkpoints.storage_reason(exc)}){kept}; free space or choose "
                          "another --out") from None


def _convert_torch_file(args) -> int:
    from asrth_jax.config_lib import load_config_file
    from asrth_jax.models import adasr

    if not args.config:
        raise OutputError("--torch-checkpoint needs --config (e.g. configs/hdtf_512.py)")
    out = os.path.abspath(args.out)
    check_checkpoint_out(out, args.overwrite)  # before any slow reading
    config = load_config_file(args.config)
    checkpoint = load_torch_file(args.torch_checkpoint)
    try:  # before building the networks, which takes a while
        check_released_layout(checkpoint)
    except ConversionError as exc:
        raise ConversionError(f"{args.torch_checkpoint}: {exc}") from None
    # Shapes only: the checkpoint fills every variable (a gap is a listed problem), so
    # initialising weights would be wasted work. A release without a discriminator keeps
    # a freshly initialised one for fine-tuning.
    generator_side = adasr.abstract_generator(config.model)
    if "discriminator" in checkpoint:
        discriminator = adasr.abstract_discriminator(config.model)
    else:
        discriminator = adasr.build_discriminator(config.model)
    try:
        convert_released_checkpoint(checkpoint, generator_side, discriminator)
    except ConversionError as exc:
        lines = str(exc).splitlines()
        if len(lines) == 1:
            raise ConversionError(f"{args.torch_checkpoint}: {lines[0]}") from None
        # Every mismatch at once: one run shows all that is wrong with the pairing, listed
        # before main()'s one error line (which stays last).
        print("\n".join(f"  {line}" for line in lines), file=sys.stderr)
        raise ConversionError(f"{args.torch_checkpoint} does not match {args.config}: "
                              f"{len(lines)} problems (above); pass the config the checkpoint "
                              "was trained with") from None
    print(f"wrote {write_checkpoint(out, generator_side, discriminator)}")
    return 0


def _convert_weights_file(args) -> int:
    from asrth_jax.models.vgg import resolve_npz_out

    name = "vgg19.npz" if args.vgg19 else "hopenet.npz"
    source = args.vgg19 or args.hopenet
    out = resolve_npz_out(args.out, name)
    cli_args.check_output_file(out, "--out", overwrite=args.overwrite)  # before reading
    try:
        with cli_args.replaced_when_whole(out) as beside:
            if args.vgg19:
                from asrth_jax.models.vgg import convert_vgg19_file

                convert_vgg19_file(source, beside)
            else:
                from asrth_jax.models.hopenet import convert_hopenet_file

                convert_hopenet_file(source, beside)
    except TorchFileError:
        raise
    except OSError as exc:  # a full disk, a folder that went read-only, ...
        kept = "is unchanged" if os.path.exists(out) else "was not written"
        raise OutputError(f"cannot write {out} ({exc.strerror or exc}); it {kept}: free "
                          "space or choose another --out") from None
    except ValueError as exc:  # the state dict does not fit the network
        raise ConversionError(f"{source}: {exc}") from None
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m asrth_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--torch-checkpoint", help="released AdaSR checkpoint (.pth.tar)")
    source.add_argument("--vgg19", help="torchvision vgg19 weights (.pth)")
    source.add_argument("--hopenet", help="HopeNet weights (hopenet_robust_alpha1.pkl)")
    parser.add_argument("--config", help="model config for --torch-checkpoint")
    parser.add_argument("--out", required=True, help="output directory (or .npz file)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (a checkpoint directory or .npz)")
    args = parser.parse_args(argv)
    try:
        if args.torch_checkpoint:
            return _convert_torch_file(args)
        return _convert_weights_file(args)
    except errors.AsrthError as exc:  # ConversionError, TorchFileError, OutputError, ...
        raise cli_args.fail(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
