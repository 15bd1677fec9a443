"""Where device time goes, from a `jax.profiler.trace(..., create_perfetto_trace=True)`.

    python -m asrth_jax.profile_summary DIR [--top 15]

Reads the Chrome-trace JSON the profiler writes (`perfetto_trace.json.gz` or
`*.trace.json.gz` under DIR), keeps the complete ("X") events of the accelerator's
processes (on a CPU-only trace, the host's XLA op events), and totals them by kernel
name and by kind of work (convolution, matmul, fusion, copy, collective). This needs
no TensorBoard profile plugin, so it works on a bare accelerator machine.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from data_pipelines.errors import AsrthError, fail


class NoTraceError(AsrthError, FileNotFoundError):
    """The folder holds no profiler trace (one line naming the folder and the fix)."""

# Substrings of kernel / op names, checked in this order; the first match names the kind.
CATEGORIES = (
    ("collective", ("all-reduce", "all_reduce", "allreduce", "all-gather", "reduce-scatter",
                    "nccl", "collective")),
    ("convolution", ("conv", "xmma", "cudnn", "implicit_gemm", "fprop", "dgrad", "wgrad",
                     "winograd")),
    ("matmul", ("gemm", "cutlass", "matmul", "dot", "cublas")),
    ("copy/transpose", ("copy", "transpose", "memcpy", "memset")),
    ("reduction", ("reduce",)),
    ("fusion", ("fusion",)),
)


WRAPPER_PREFIXES = ("$", "Thunk", "PjitFunction", "ExecuteHelper", "PjRt")


def categorize(name: str) -> str:
    lowered = name.lower()
    for category, needles in CATEGORIES:
        if any(needle in lowered for needle in needles):
            return category
    return "other"


def find_trace_file(directory: str) -> str:
    patterns = ("**/perfetto_trace.json.gz", "**/*.trace.json.gz", "**/*.trace.json")
    for pattern in patterns:
        found = sorted(glob.glob(os.path.join(directory, pattern), recursive=True),
                       key=os.path.getmtime)
        if found:
            return found[-1]
    raise NoTraceError(f"no profiler trace (*.trace.json.gz) under {directory}: run "
                            "jax.profiler.trace(DIR, create_perfetto_trace=True) first")


def load_events(path: str) -> list[Mapping[str, Any]]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def _device_pids(events: Iterable[Mapping[str, Any]]) -> tuple[set, str]:
    names = {e["pid"]: str(e.get("args", {}).get("name", "")) for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    accel = {pid for pid, name in names.items()
             if "/device:" in name and "cpu" not in name.lower()}
    if accel:
        return accel, "device"
    return set(names) or {None}, "host"


def summarize_events(events: list[Mapping[str, Any]], top: int = 15) -> dict[str, Any]:
    """Totals of complete events (microseconds) on the accelerator, else the host."""
    pids, where = _device_pids(events)
    by_name: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for event in events:
        if event.get("ph") != "X" or "dur" not in event:
            continue
        if where == "device" and event.get("pid") not in pids:
            continue
        name = str(event.get("name", "?"))
        if name.startswith(WRAPPER_PREFIXES):  # Python tracer events and whole-program spans

            continue
        slot = by_name[name]
        slot[0] += float(event["dur"])
        slot[1] += 1
    total = sum(us for us, _ in by_name.values())
    by_category: dict[str, float] = collections.defaultdict(float)
    for name, (us, _) in by_name.items():
        by_category[categorize(name)] += us
    ranked = sorted(by_name.items(), key=lambda item: -item[1][0])[:top]
    share = (lambda us: us / total) if total else (lambda us: 0.0)
    return {
        "where": where,
        "total_us": total,
        "by_category": {k: {"us": v, "share": share(v)}
                        for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])},
        "top": [{"name": name, "us": us, "count": int(count), "share": share(us),
                 "category": categorize(name)} for name, (us, count) in ranked],
    }


def summarize_trace(directory: str, top: int = 15) -> dict[str, Any]:
    path = find_trace_file(directory)
    summary = summarize_events(load_events(path), top)
    summary["trace_file"] = path
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    lines = [f"profile ({summary['where']} events, {summary['total_us'] / 1e3:.1f} ms total)"]
    for category, entry in summary["by_category"].items():
        lines.append(f"  {category:>15}: {entry['us'] / 1e3:9.2f} ms  {entry['share']:6.1%}")
    lines.append("  top kernels / ops:")
    for entry in summary["top"]:
        lines.append(f"    {entry['share']:6.1%} {entry['us'] / 1e3:9.2f} ms x{entry['count']:<5} "
                     f"[{entry['category']}] {entry['name'][:90]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asrth_jax.profile_summary")
    parser.add_argument("directory")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    try:
        summary = summarize_trace(args.directory, args.top)
    except NoTraceError as exc:
        raise fail(str(exc)) from None
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
