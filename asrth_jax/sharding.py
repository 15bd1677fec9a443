"""Device mesh and shardings as named axes (MaxText style).

Axes: 'data' (pure data parallelism) and 'fsdp' (data parallelism whose devices may
also split parameters and optimiser state). The batch is split over both axes.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from asrth_jax.errors import ConfigError
from asrth_jax.train_state import TrainState

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> Mesh:
    """A ('data', 'fsdp') mesh over all devices; `data=-1` takes what `fsdp` leaves."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    fsdp = int(mesh_config.fsdp)
    data = int(mesh_config.data)
    if data == -1:
        if devices.size % fsdp:
            raise ConfigError(f"config.mesh.fsdp={fsdp} does not divide the {devices.size} "
                              "devices; pick a divisor")
        data = devices.size // fsdp
    if data * fsdp != devices.size:
        raise ConfigError(f"config.mesh data x fsdp = {data} x {fsdp} = {data * fsdp} but "
                          f"there are {devices.size} devices; set config.mesh.data=-1")
    return Mesh(devices.reshape(data, fsdp), MESH_AXES)


def check_batch_divides(global_batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over the devices and the processes."""
    devices = mesh.devices.size
    if global_batch_size % devices:
        raise ConfigError(f"config.train.global_batch_size={global_batch_size} does not divide "
                          f"across {devices} devices; use a multiple of {devices}")
    if global_batch_size % jax.process_count():
        raise ConfigError(f"config.train.global_batch_size={global_batch_size} does not divide "
                          f"across {jax.process_count()} processes")


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int) -> P:
    """Shard the largest dimension divisible by the 'fsdp' axis size; else replicate."""
    if fsdp_size <= 1 or not shape:
        return P()
    order = sorted(range(len(shape)), key=lambda i: -shape[i])
    for axis in order:
        if shape[axis] % fsdp_size == 0 and shape[axis] >= fsdp_size:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(abstract_state: TrainState, mesh: Mesh, shard_params: bool) -> TrainState:
    """Shardings for a `TrainState`: each network's parameters and optimiser moments
    follow `fsdp_spec` when `shard_params`, everything else (step, rng, BatchNorm
    statistics, spectral vectors) is replicated."""
    fsdp_size = mesh.shape["fsdp"]
    replicated = jax.tree.map(lambda _: NamedSharding(mesh, P()), abstract_state)
    if not shard_params:
        return replicated

    def spread(tree: Any) -> Any:
        return jax.tree.map(
            lambda leaf: NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), fsdp_size)), tree)

    return replicated.replace(**{
        name: replicated_network.replace(params=spread(network.params),
                                         opt=spread(network.opt))
        for (name, network), replicated_network in zip(
            abstract_state.networks().items(), replicated.networks().values(), strict=True)})


def place(tree: Any, shardings: Any) -> Any:
    """Host arrays, equal on every process, as global arrays with `shardings`: each
    device gets its slice of the host value (no program, no cross-process traffic)."""
    def one(value, target: NamedSharding) -> jax.Array:
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, target, lambda index: value[index])

    return jax.tree.map(one, tree, shardings)


def process_barrier(name: str, timeout_s: float = 1800.0) -> None:
    """All processes wait here (coordination service, not a device collective: Orbax's
    public barrier on the `jax.distributed` client)."""
    if jax.process_count() == 1:
        return
    ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))


def check_deterministic_reductions(mesh_config: ml_collections.ConfigDict) -> None:
    """`deterministic_reductions` runs the step per device on replicated parameters."""
    if mesh_config.deterministic_reductions and mesh_config.shard_params:
        raise ConfigError("config.mesh.deterministic_reductions needs replicated parameters: "
                          "set config.mesh.shard_params=False (or turn it off)")


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def ordered_sum(x: Any, axes: tuple[str, ...] = BATCH_AXES) -> Any:
    """Sum of a per-device pytree over the mesh `axes` inside `shard_map`, added in
    device order: the same bits whatever the process layout.

    `psum` leaves the order to the collective (gloo's ring across processes, a
    rendezvous within one), so the same devices split over 1 or 2 processes round
    differently. Gathering is exact, and the local sum of the gathered copies is one
    compiled reduction, so every layout adds the same numbers in the same order. It
    costs N copies of `x` per device and all-gather traffic instead of all-reduce.
    Its gradient is the same ordered sum of the cotangents.
    """
    return jax.tree.map(lambda v: jax.lax.all_gather(v, axes).sum(axis=0), x)


def _ordered_sum_forward(x: Any, axes: tuple[str, ...]) -> tuple[Any, None]:
    return ordered_sum(x, axes), None


def _ordered_sum_backward(axes: tuple[str, ...], _, cotangent: Any) -> tuple[Any]:
    return (ordered_sum(cotangent, axes),)


ordered_sum.defvjp(_ordered_sum_forward, _ordered_sum_backward)
