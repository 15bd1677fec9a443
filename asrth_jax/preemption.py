"""Preemption (SIGTERM) agreed across processes: every process stops at the same step.

On a TPU pod or a SLURM job the hosts receive SIGTERM at different steps. Each host
deciding alone would call Orbax's save, a collective, at a different step: a hang or
mismatched checkpoints. With several processes this asks JAX's preemption sync manager
(started by `jax.distributed.initialize`; its own SIGTERM notifier reports to the
coordination service), which answers True at the same step on every process: the step
after the furthest one any process had reached when the notice came (MaxText's
`reached_preemption`). With one process a Python handler sets a flag, read once a step.
"""

from __future__ import annotations

import signal
from types import FrameType

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
    """`watch = PreemptionWatch(); watch.listen()`, then `watch.reached(step)` once every
    step (checkpoint and stop when True), and `watch.close()` at the end.

    Every process must call `reached` once per step, from the same first step (a run
    and its resumption start all processes at one checkpoint)."""

    def __init__(self) -> None:
        self.multi_process = jax.process_count() > 1
        self._received = False
        self._previous_handler = None

    def listen(self) -> None:
        # With several processes the sync manager's C++ notifier owns SIGTERM: a Python
        # handler would replace it, and no other process would ever hear of the notice.
        if not self.multi_process:
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def close(self) -> None:
        """Gives SIGTERM back to the handler it had before `listen`."""
        if not self.multi_process and self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._received = True

    def reached(self, step: int) -> bool:
        """Whether this step is the one to checkpoint and stop at, on every process."""
        if self.multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._received
