"""Training length and learning-rate milestones, in epochs (the reference) or in steps.

The reference counts epochs of its repeated dataset (`num_repeats` visits of every
identity) in drop-last batches, so one epoch is floor(records / global batch) steps, a
number known only once the dataset is open. A config states its length either in
epochs (`train.num_epochs`, `optim.decay_epochs`: the paper configs) or in steps
(`train.num_steps`, `optim.decay_milestones`: the demo and the tests);
`resolve_epochs` turns the epoch form into the step numbers the train loop and the optimiser read.
"""

from __future__ import annotations

import logging

import ml_collections

from asrth_jax.errors import ConfigError


def check_training_length(config: ml_collections.ConfigDict) -> None:
    """One-line ConfigError unless the length is given exactly one way and the
    milestones at most one way."""
    train, optim = config.train, config.optim
    if train.num_epochs < 0 or train.num_steps < 0:
        raise ConfigError(f"config.train.num_epochs ({train.num_epochs}) and num_steps "
                          f"({train.num_steps}) must not be negative")
    if train.num_epochs and train.num_steps:
        raise ConfigError(
            f"config.train.num_epochs={train.num_epochs} and config.train.num_steps="
            f"{train.num_steps} are both set; keep one, e.g. --config.train.num_epochs=0 to "
            f"train for {train.num_steps} steps")
    if not train.num_epochs and not train.num_steps:
        raise ConfigError("the config sets neither config.train.num_epochs nor "
                          "config.train.num_steps; set one, e.g. --config.train.num_steps=1000")
    if optim.decay_epochs and optim.decay_milestones:
        raise ConfigError(
            f"config.optim.decay_epochs={tuple(optim.decay_epochs)} and "
            f"config.optim.decay_milestones={tuple(optim.decay_milestones)} are both set; keep "
            "one, e.g. --config.optim.decay_epochs='()' to decay at the step milestones")
    if any(m <= 0 for m in (*optim.decay_epochs, *optim.decay_milestones)):
        raise ConfigError("config.optim.decay_epochs / decay_milestones must be positive, got "
                          f"{tuple(optim.decay_epochs) or tuple(optim.decay_milestones)}")


def steps_per_epoch(num_records: int, global_batch_size: int) -> int:
    """Steps in one pass over `num_records` pairs (the reference drops the last batch)."""
    steps = num_records // global_batch_size
    if steps < 1:
        raise ConfigError(f"{num_records} training records are fewer than the global batch "
                          f"{global_batch_size}; raise config.data.num_repeats or add videos")
    return steps


def resolve_epochs(config: ml_collections.ConfigDict, num_records: int
                   ) -> ml_collections.ConfigDict:
    """A copy of `config` in step form (num_steps, decay_milestones), the epoch keys
    cleared; logs the epoch size and the derived steps in one line."""
    check_training_length(config)
    epoch = steps_per_epoch(num_records, config.train.global_batch_size)
    out = config.copy_and_resolve_references()
    if config.train.num_epochs:
        out.train.num_steps = config.train.num_epochs * epoch
        out.train.num_epochs = 0
    if config.optim.decay_epochs:
        out.optim.decay_milestones = tuple(int(e) * epoch for e in config.optim.decay_epochs)
        out.optim.decay_epochs = ()
    logging.info(
        "epoch = %d records / global batch %d = %d steps; training %s = %d steps; lr x%s at "
        "%s = steps %s", num_records, config.train.global_batch_size, epoch,
        f"{config.train.num_epochs} epochs" if config.train.num_epochs else "by steps",
        out.train.num_steps, config.optim.decay_factor,
        f"epochs {tuple(config.optim.decay_epochs)}" if config.optim.decay_epochs
        else "step milestones", tuple(out.optim.decay_milestones))
    return out
