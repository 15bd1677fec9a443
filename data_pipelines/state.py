"""Saving and restoring the position of a training data iterator.

The stream is a pure function of the seed and the position, so the whole state
is Grain's small JSON dict (e.g. {"next_index": 123}). Use these helpers for a
plain file per host, or pass ``grain.checkpoint.CheckpointSave(iterator)`` /
``CheckpointRestore(iterator)`` as an item of an Orbax CheckpointManager
``ocp.args.Composite(...)`` to store it next to the model checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grain

CheckpointSave = grain.checkpoint.CheckpointSave
CheckpointRestore = grain.checkpoint.CheckpointRestore


def _state_file(directory: str | Path, shard_index: int, shard_count: int) -> Path:
    # Same naming as grain.checkpoint.CheckpointHandler, so either can read the other.
    return Path(directory) / f"process_{shard_index}-of-{shard_count}.json"


def get_iterator_state(iterator: grain.DatasetIterator) -> dict[str, Any]:
    return iterator.get_state()


def save_iterator_state(iterator: grain.DatasetIterator, directory: str | Path,
                        shard_index: int = 0, shard_count: int = 1) -> Path:
    """Write this host's iterator state as JSON; returns the file."""
    path = _state_file(directory, shard_index, shard_count)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(iterator.get_state()))
    return path


def restore_iterator_state(iterator: grain.DatasetIterator, directory: str | Path,
                           shard_index: int = 0, shard_count: int = 1
                           ) -> grain.DatasetIterator:
    """Move a freshly built iterator (same config and seed) to the saved position."""
    path = _state_file(directory, shard_index, shard_count)
    if not path.exists():
        raise FileNotFoundError(f"no data iterator state at {path}; was it saved with "
                                f"shard {shard_index} of {shard_count}?")
    iterator.set_state(json.loads(path.read_text()))
    return iterator
