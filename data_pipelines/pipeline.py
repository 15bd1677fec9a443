"""Grain input pipelines: training pairs and the evaluation (reconstruction) protocol.

Training: one global stream (per-epoch shuffle of all record keys), cut into global
batches; each host reads its slice of every global batch -> read pair (source,
driving) -> FOMM augmentations -> degrade the source only (the degradation's
once-per-batch choices shared by each global batch) -> batch -> uint8->float32
-> threads / worker processes / prefetch. Element ``i`` of a host's stream is a pure
function of (seed, global position): the same seed gives the same global batches for
any number of hosts, and a saved iterator state (a few integers) restores the stream.

Batch (dict of NHWC arrays): ``source`` (clean), ``source_lq`` (degraded, same
shape), ``driving`` (clean target), float32 in [0, 1] (uint8 with
``config.output_uint8``), plus ``video_index`` [B], ``frame_index`` [B, 2] and
``record_key`` [B] (for bookkeeping and tests).
"""

from __future__ import annotations

from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags

from data_pipelines import folders, synthetic
from data_pipelines.augment import AugmentPair
from data_pipelines.degradation import DegradeSource
from data_pipelines.errors import ConfigError, DatasetNotFoundError, prepare_hint
from data_pipelines.sources import PairSource, VideoCollection

IMAGE_KEYS = ("source", "source_lq", "driving")


def build_videos(config: ml_collections.ConfigDict, split: str) -> VideoCollection:
    """The video collection ``config.kind`` names, for ``split`` ('train' or 'test')."""
    kind = config.kind
    if kind == "synthetic":
        s = config.synthetic
        n = s.num_train_identities if split == "train" else s.num_test_identities
        return synthetic.SyntheticVideos(
            synthetic.identity_seeds(split, n, s.seed), s.frames_per_video, config.image_size)
    if kind in ("vox", "hdtf"):
        if not config.root:
            raise DatasetNotFoundError(
                f"config.data.root is empty for kind={kind!r}; set it to the video folder")
        paths = folders.split_videos(config.root, split, config.train_fraction)
        return folders.FolderVideos(paths, config.image_size, config.max_frames_per_video,
                                    config.video_cache_size)
    if kind == "tfds":
        # TensorFlow Datasets loads only for this kind: the other kinds run without it.
        from data_pipelines.tfds_builder import open_prepared

        if not config.tfds_dir:
            raise DatasetNotFoundError(
                f"config.data.tfds_dir is empty; create a dataset with: {prepare_hint()}")
        return open_prepared(config.tfds_dir, split, config.tfds_name)
    raise ConfigError(f"unknown config.data.kind {kind!r}; choose synthetic, vox, hdtf or tfds")


def make_pair_source(config: ml_collections.ConfigDict, split: str = "train",
                     seed: int = 0) -> PairSource:
    """Grain RandomAccessDataSource of (source, driving) pairs for ``split``."""
    return PairSource(
        build_videos(config, split),
        seed=seed,
        num_repeats=config.num_repeats if split == "train" else 1,
        id_sampling=config.id_sampling,
        max_frame_distance=config.max_frame_distance or None,
    )


class _ReadGlobalRecord(grain.transforms.Map):
    """Local stream position -> this host's element of the one global stream.

    Global batch b holds global positions [b*G, (b+1)*G); host h reads the slice
    [h*B, (h+1)*B) of it. Record choice, augmentation and degradation depend only on
    the global position (and the degradation's shared choices on b), so a global batch
    is the same for any number of hosts (and a 2-process run computes the losses of a
    1-process run).
    """

    def __init__(self, source: PairSource, global_keys: grain.MapDataset, seed: int,
                 shard_index: int, per_host: int, shard_count: int,
                 augment: AugmentPair, degrade: DegradeSource):
        self.source = source
        self.global_keys = global_keys
        self.seed = seed
        self.shard_index = shard_index
        self.per_host = per_host
        self.global_batch = per_host * shard_count
        self.augment = augment
        self.degrade = degrade

    def map(self, local_position: int) -> dict[str, Any]:
        batch, offset = divmod(int(local_position), self.per_host)
        position = batch * self.global_batch + self.shard_index * self.per_host + offset
        epoch = position // len(self.source)
        element = self.source[epoch * len(self.source) + int(self.global_keys[position])]
        aug_rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, position]))
        deg_rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2, position]))
        # The degradation's once-per-batch choices: every pair of global batch `batch`
        # draws them from the same seed, so they agree without any shared state.
        batch_rng = np.random.default_rng(np.random.SeedSequence([self.seed, 3, batch]))
        return self.degrade.random_map(self.augment.random_map(element, aug_rng), deg_rng,
                                       self.degrade.batch_choices(batch_rng))


class _ToOutput(grain.transforms.Map):
    """uint8 -> float32 [0, 1] once per batch (vectorised), unless uint8 is requested."""

    def __init__(self, as_uint8: bool):
        self.as_uint8 = as_uint8

    def map(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.as_uint8:
            return batch
        out = dict(batch)
        for k in IMAGE_KEYS:
            if k in out:
                out[k] = out[k].astype(np.float32) * np.float32(1.0 / 255.0)
        return out


def make_train_dataset(
    config: ml_collections.ConfigDict,
    *,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    per_host_batch_size: int,
    num_epochs: int | None = None,
    source: PairSource | None = None,
) -> grain.MapDataset:
    """Batched, random-access training dataset of one host (shard) before iteration.

    Sharding splits the record keys (like grain.sharding.ShardByJaxProcess with
    drop_remainder) so hosts read disjoint records; pass shard_index /
    shard_count = jax.process_index() / jax.process_count().
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    source = source or make_pair_source(config, "train", seed)
    global_batch = per_host_batch_size * shard_count
    if len(source) < global_batch:
        raise ConfigError(
            f"{len(source)} training records are fewer than the global batch {global_batch}; "
            "raise config.data.num_repeats or add videos")
    # Per-epoch reshuffle of all record keys: one global order for every host count.
    global_keys = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat(num_epochs)
    local_batches = len(global_keys) // global_batch
    ds = grain.MapDataset.range(local_batches * per_host_batch_size)
    ds = ds.map(_ReadGlobalRecord(source, global_keys, seed, shard_index, per_host_batch_size,
                                  shard_count, AugmentPair(config.augmentation),
                                  DegradeSource(config.degradation)))
    ds = ds.batch(per_host_batch_size, drop_remainder=True)
    return ds.map(_ToOutput(config.output_uint8))


def to_iterator(ds: grain.MapDataset, config: ml_collections.ConfigDict
                ) -> grain.DatasetIterator:
    """Threads + optional worker processes + prefetch; the iterator has get/set_state."""
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=config.read_threads,
                                                 prefetch_buffer_size=config.prefetch))
    if config.worker_count > 0:
        # Grain's workers read absl flags; outside absl.app (tests, notebooks) nobody
        # parsed them, so accept the defaults instead of failing in every worker.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=config.worker_count, per_worker_buffer_size=config.worker_buffer_size))
    return iter(it_ds)


def make_train_loader(
    config: ml_collections.ConfigDict,
    *,
    seed: int,
    global_batch_size: int,
    shard_index: int = 0,
    shard_count: int = 1,
    num_epochs: int | None = None,
    source: PairSource | None = None,
) -> grain.DatasetIterator:
    """Iterator of this host's training batches (global_batch_size / shard_count each);
    `source` reuses an opened PairSource (the trainer counts its records first)."""
    if global_batch_size % shard_count:
        raise ConfigError(f"global batch {global_batch_size} is not divisible by "
                          f"{shard_count} hosts")
    ds = make_train_dataset(config, seed=seed, shard_index=shard_index,
                            shard_count=shard_count,
                            per_host_batch_size=global_batch_size // shard_count,
                            num_epochs=num_epochs, source=source)
    return to_iterator(ds, config)


class _EvalPair(grain.transforms.Map):
    """(video, frame) -> frame 0 as source, frame t as driving, fixed degradation."""

    def __init__(self, videos: VideoCollection, degradation: ml_collections.ConfigDict,
                 seed: int):
        self.videos = videos
        self.degrade = DegradeSource(degradation)
        self.seed = seed

    def map(self, item: tuple[int, int]) -> dict[str, Any]:
        video, t = item
        src, drv = self.videos.read_frames(video, [0, t])
        rng = np.random.default_rng([self.seed, video])  # same source_lq for every t
        element = {"source": src, "driving": drv, "video_index": np.int32(video),
                   "frame_index": np.array([0, t], np.int32)}
        return self.degrade.random_map(element, rng)


def make_eval_dataset(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.MapDataset:
    """Reconstruction protocol over the test split, batched, in (video, frame) order.

    Each test video contributes (frame 0 -> frame t) for every t; the source is
    degraded once per video with ``config.eval.degradation_seed``. The last batch
    may be smaller (no records dropped); hosts take disjoint contiguous ranges.
    """
    videos = build_videos(config, "test")
    max_videos = config.eval.max_videos or len(videos)
    items = []
    for v in range(min(len(videos), max_videos)):
        n = videos.num_frames(v)
        # A frame cap samples evenly over the clip: the first frames barely move.
        count = min(n, config.eval.max_frames or n)
        frames = np.unique(np.round(np.linspace(0, n - 1, count)).astype(int))
        items += [(v, int(t)) for t in frames]
    per = -(-len(items) // shard_count)
    ds = grain.MapDataset.source(items[shard_index * per:(shard_index + 1) * per])
    ds = ds.map(_EvalPair(videos, config.degradation, config.eval.degradation_seed))
    ds = ds.batch(batch_size or config.eval.batch_size, drop_remainder=False)
    return ds.map(_ToOutput(config.output_uint8))


def make_eval_loader(config: ml_collections.ConfigDict, **kwargs: Any) -> grain.DatasetIterator:
    """Iterator over make_eval_dataset(config, **kwargs)."""
    return to_iterator(make_eval_dataset(config, **kwargs), config)
