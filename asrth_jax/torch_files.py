"""Reading PyTorch weight files (`.pth`, `.pth.tar`, `.pkl`) that users hand us.

Such a file is a pickle, and a pickle may run any code while it loads, so a downloaded
checkpoint is untrusted data. Released weights hold only tensors, numbers, strings and
dicts/lists/tuples of them (optimizer states included), which torch's weights-only
unpickler can build; everything else (a class, a function such as `os.system`) is
refused before it is called. That covers both layouts torch writes: the zip archive of
`torch.save` and the legacy plain-pickle stream.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import numpy as np

from asrth_jax import errors

# torch's refusal names the global it would have had to import.
_BLOCKED_GLOBAL = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)")
_ALLOWED = "tensors, numbers, strings and dicts/lists of them"


class TorchFileError(errors.AsrthError, ValueError):
    """A weight file that is missing, unreadable, or holds more than plain data (one line)."""


def _import_torch():
    try:
        import torch
    except ImportError:
        raise TorchFileError("reading PyTorch weight files needs torch; install it with "
                             "pip install '.[dev]'") from None
    return torch


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def read_torch_file(path: str | os.PathLike) -> Any:
    """Loads a PyTorch weight file on the CPU, tensors as numpy arrays, containers kept.

    Raises TorchFileError (one line naming the file) when the file is missing, is not a
    PyTorch file, or would need code to load.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise TorchFileError(f"{path} {what}; pass the weight file you downloaded")
    torch = _import_torch()
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols on stderr; the error below says it all.
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle problem, a broken zip, an empty file, ...
        blocked = _BLOCKED_GLOBAL.search(str(exc))
        if blocked:
            raise TorchFileError(
                f"refusing to load {path}: it asks to run {blocked.group(1)}, and weight "
                f"files may hold only {_ALLOWED}; get the file from its original "
                "release") from None
        if "Weights only load failed" in str(exc):
            raise TorchFileError(
                f"refusing to load {path}: it is not a PyTorch weight file of {_ALLOWED} "
                "(its pickle needs more than the weights-only reader allows)") from None
        raise TorchFileError(f"cannot read {path} as a PyTorch weight file "
                             f"({_first_line(exc)})") from None
    return _to_numpy(obj, torch)


def _to_numpy(x: Any, torch) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, dict):
        return {k: _to_numpy(v, torch) for k, v in x.items()}
    if type(x) in (list, tuple):  # subclasses such as torch.Size stay as they are
        return type(x)(_to_numpy(v, torch) for v in x)
    return x


def as_array(value: Any, where: str) -> np.ndarray:
    """A numeric array from a state-dict value, or TorchFileError naming `where`."""
    array = np.asarray(value) if not isinstance(value, (str, bytes, dict)) else None
    if array is None or array.dtype.kind not in "biuf":
        raise TorchFileError(f"{where} is a {type(value).__name__}, not a weight array")
    return array
