"""Does a compiled train step fit the device? Asked after compiling, before step one.

XLA's memory plan of the compiled step (arguments + unaliased outputs + temporaries,
`planned_bytes`) is compared with what the device can hold: its allocator's
`bytes_limit` on GPU/TPU, the host's physical memory on CPU (shared by all of this
process's CPU devices). The memory helpers live here, where the training loop owns them;
the benchmark CLI reports them too.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from asrth_jax import errors

GIB = 1024 ** 3


class StepTooLarge(errors.AsrthError):
    """The compiled step needs more memory than the device has (one-line message)."""


def device_memory_stat(device: jax.Device, key: str) -> int | None:
    """One of the device allocator's statistics; None where the backend has none (CPU)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return int(stats[key]) if stats and key in stats else None


def memory_limit_bytes(device: jax.Device) -> int | None:
    return device_memory_stat(device, "bytes_limit")


def memory_plan(compiled) -> dict[str, int]:
    """XLA's buffer assignment for a compiled program (bytes), where the backend has one."""
    try:
        analysis = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):
        return {}
    if analysis is None:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
              "temp_size_in_bytes", "generated_code_size_in_bytes")
    return {f"train_{name}": int(getattr(analysis, name)) for name in fields
            if hasattr(analysis, name)}


def planned_bytes(plan: dict[str, int]) -> int:
    """Device bytes the step needs: arguments + outputs not aliased to them + temporaries."""
    return (plan["train_argument_size_in_bytes"] + plan["train_output_size_in_bytes"]
            - plan.get("train_alias_size_in_bytes", 0) + plan["train_temp_size_in_bytes"])


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_capacity_bytes(device: jax.Device) -> tuple[int, str]:
    """Bytes one device can hold, and where that number comes from."""
    limit = memory_limit_bytes(device)
    if limit is not None:
        return limit, f"{device.platform.upper()} bytes_limit"
    return host_memory_bytes(), "host memory"


def _size(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB / 10 else f"{nbytes / 1024 ** 2:.1f} MiB"


def _knobs(config: ml_collections.ConfigDict) -> str:
    """The settings that lower the step's memory, those not already in use."""
    knobs = [f"config.train.global_batch_size (now {config.train.global_batch_size})"]
    if not config.train.remat:
        knobs.append("config.train.remat=True")
    if config.train.compute_dtype != "bfloat16":
        knobs.append("config.train.compute_dtype=bfloat16")
    if not config.mesh.shard_params:
        knobs.append("config.mesh.fsdp=N with config.mesh.shard_params=True")
    return ", ".join(knobs)


def check_step_fits(compiled, config: ml_collections.ConfigDict) -> None:
    """Raises StepTooLarge when XLA's plan for `compiled` exceeds the device; does
    nothing where the backend gives no plan."""
    plan = memory_plan(compiled)
    if "train_temp_size_in_bytes" not in plan or "train_argument_size_in_bytes" not in plan:
        return
    need = planned_bytes(plan)
    device = jax.local_devices()[0]
    capacity, source = device_capacity_bytes(device)
    sharing = 1
    if device.platform == "cpu":  # every CPU device of this process lives in host memory
        sharing = jax.local_device_count()
    if need * sharing <= capacity:
        return
    per = f" x {sharing} CPU devices" if sharing > 1 else " per device"
    raise StepTooLarge(
        f"the train step needs {_size(need)}{per} (XLA's memory plan of the compiled "
        f"step) but the device has {_size(capacity)} ({source}); "
        f"lower it with {_knobs(config)}")
