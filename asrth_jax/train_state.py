"""What a training run updates, nested per network (`TrainState`).

Each network's state (`NetworkState`: parameters, the rest of its variables, its
optimiser state) sits in one field of `TrainState`; `TrainState.networks()` finds them
by type, so the shardings (`asrth_jax.sharding.state_shardings`), the checkpoint
mapping (`asrth_jax.checkpoints.state_to_items`) and the training loop loop over the
networks without spelling their field names. The field names are the names the
checkpoint's `models` item gives the networks.
"""

from __future__ import annotations

import dataclasses

import jax
import optax
from flax import nnx, struct


@struct.dataclass
class NetworkState:
    """One network's part of the train state."""

    params: nnx.State  # what the optimiser updates (nnx.Param)
    rest: nnx.State  # everything else: BatchNorm statistics, spectral-norm vectors
    opt: optax.OptState


@struct.dataclass
class TrainState:
    """Everything a training run updates: the checkpoint holds exactly this
    (`asrth_jax.checkpoints.state_to_items` maps it to the saved items)."""

    step: jax.Array  # () int32: updates done
    rng: jax.Array  # threefry key of the train-time stream (equivariance warps)
    generator_side: NetworkState  # generator, keypoint detector and head-pose estimator
    discriminator: NetworkState

    def networks(self) -> dict[str, NetworkState]:
        """{field name: NetworkState} in field order. Works on any tree of this
        structure (abstract shapes, shardings), whatever its leaves are."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if isinstance(getattr(self, field.name), NetworkState)}
