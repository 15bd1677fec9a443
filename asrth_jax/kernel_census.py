"""What a compiled XLA program asks the compiler to generate: its kernels, how many of
them are distinct, and which part of the model made each.

XLA compiles a kernel once for all its identical copies, so a program's compile time
follows its *distinct* kernels, not its size (`benchmark --kernel-cost` measures both
on the device at hand). A conv net's distinct kernels come from its distinct layer
shapes, forward and backward; `census` counts them from `compiled.as_text()` and
attributes each to a part of the model by the Python stack JAX recorded for it.

Two kernels are "identical" here when their instruction and fused computation (with the
reducers it applies) are the same, names and metadata aside: close to, not exactly,
XLA's own test.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from typing import Any

# Instructions that generate no kernel: data plumbing and control flow (whose bodies are
# walked instead).
_NO_KERNEL = frozenset({
    "parameter", "constant", "bitcast", "get-tuple-element", "tuple", "copy", "while",
    "conditional", "call", "after-all", "partition-id", "replica-id", "copy-start",
    "copy-done", "opt-barrier", "add-dependency",
})
# Layers that several networks share: a kernel made there belongs to the network that
# called them, found further up its stack.
SHARED_LAYER_FILES = frozenset({"blocks", "warp", "antialias", "adasr"})

_COMPUTATION = re.compile(r"^(?:ENTRY )?(%[\w.\-]+) \(.*?\) -> .*? \{\n(.*?)\n\}", re.M | re.S)
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%[\w.\-]+ = (.*?) ([a-z][\w\-]*)\(", re.M)
_CALLED = re.compile(r"(?:calls|to_apply)=(%[\w.\-]+)")
_CONTROL_FLOW = re.compile(
    r"(?:body|condition|true_computation|false_computation|to_apply)=(%[\w.\-]+)"
    r"|branch_computations=\{([^}]*)\}")
_METADATA = re.compile(r", metadata=\{[^}]*\}")
_NAME = re.compile(r"%[\w.\-]+")
_STACK_FRAME = re.compile(r"stack_frame_id=(\d+)")
# A convolution or matmul, bare, fused, or as a library call: what XLA:GPU autotunes.
_CONV_DOT = re.compile(r" (?:convolution|dot)\(|custom_call_target=\"[^\"]*(?:conv|gemm|matmul)",
                       re.I)


def _table(text: str, title: str) -> dict[int, str]:
    """One of the debug tables (FileNames, FileLocations, ...) that head the module."""
    match = re.search(rf"^{title}\n(.*?)(?:\n\n|\Z)", text, re.M | re.S)
    if not match:
        return {}
    rows = (line.split(" ", 1) for line in match.group(1).split("\n") if " " in line)
    return {int(key): value for key, value in rows if key.isdigit()}


class _Stacks:
    """The Python stacks in a compiled module's debug tables (innermost frame first)."""

    def __init__(self, text: str):
        self.files = {k: v.strip('"') for k, v in _table(text, "FileNames").items()}
        self.locations = {k: dict(re.findall(r"(\w+)=(\d+)", v))
                          for k, v in _table(text, "FileLocations").items()}
        self.frames = {k: dict(re.findall(r"(\w+)=(\d+)", v))
                       for k, v in _table(text, "StackFrames").items()}

    def files_of(self, frame_id: int) -> list[str]:
        out, seen = [], set()
        while frame_id in self.frames and frame_id not in seen:
            seen.add(frame_id)
            frame = self.frames[frame_id]
            location = self.locations.get(int(frame["file_location_id"]), {})
            out.append(self.files.get(int(location.get("file_name_id", -1)), "?"))
            # The table's parent ids count from 1, with 0 for "no parent".
            frame_id = int(frame["parent_frame_id"]) - 1
        return out


def part_of(files: Iterable[str]) -> str:
    """The part of the model a kernel belongs to, from its stack's files (innermost
    first): "optimizer" where optax made it, else the innermost file of this package
    that is not a shared layer (`dense_motion`, `vgg`, `losses`, ...), else "unattributed"
    (XLA's own kernels carry no stack: casts and layout changes it inserted)."""
    files = list(files)
    if any("/optax/" in f for f in files):
        return "optimizer"
    for f in files:
        stem = f.rsplit("/", 1)[-1].removesuffix(".py")
        if "/asrth_jax/" in f and stem not in SHARED_LAYER_FILES:
            return stem
    return "unattributed"


def _normalised(line: str) -> str:
    return _NAME.sub("%", _METADATA.sub("", line)).strip()


def census(hlo_text: str) -> dict[str, Any]:
    """Kernels of a compiled program's text (`compiled.as_text()`): `kernels` (every
    instruction that generates one, control-flow bodies included), `distinct` (identical
    ones counted once), `distinct_conv_dot` (the distinct ones with a convolution or
    matmul in them: on a GPU, each is autotuned) and `by_part` (each part's kernels and
    its own distinct ones)."""
    computations = {name: body for name, body in _COMPUTATION.findall(hlo_text)}
    entry = re.search(r"^ENTRY (%[\w.\-]+)", hlo_text, re.M)
    if entry is None:
        raise ValueError("not an HLO module's text: no ENTRY computation")
    stacks = _Stacks(hlo_text)

    def key_of(line: str) -> str:
        parts = [_normalised(line)]
        for called in _CALLED.findall(line):
            body = computations.get(called, "")
            parts.append(_normalised(body))
            parts.extend(_normalised(computations.get(nested, ""))
                         for nested in _CALLED.findall(body))
        return "\n".join(parts)

    kernels, distinct, conv_dot = 0, set(), set()
    by_part: dict[str, dict[str, Any]] = collections.defaultdict(
        lambda: {"kernels": 0, "distinct": set()})
    pending, walked = [entry.group(1)], set()
    while pending:
        name = pending.pop()
        if name in walked or name not in computations:
            continue
        walked.add(name)
        for line in computations[name].split("\n"):
            op = _INSTRUCTION.match(line)
            if op is None:
                continue
            if op.group(2) in ("while", "conditional", "call"):
                for single, branches in _CONTROL_FLOW.findall(line):
                    pending.extend([single] if single else _NAME.findall(branches))
            if op.group(2) in _NO_KERNEL:
                continue
            key = key_of(line)
            frame = _STACK_FRAME.search(line)
            part = part_of(stacks.files_of(int(frame.group(1))) if frame else ())
            kernels += 1
            distinct.add(key)
            if _CONV_DOT.search(key):
                conv_dot.add(key)
            by_part[part]["kernels"] += 1
            by_part[part]["distinct"].add(key)
    ordered = sorted(by_part.items(), key=lambda kv: -len(kv[1]["distinct"]))
    return {"kernels": kernels, "distinct": len(distinct), "distinct_conv_dot": len(conv_dot),
            "by_part": {part: {"kernels": v["kernels"], "distinct": len(v["distinct"])}
                        for part, v in ordered}}
