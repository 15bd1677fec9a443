"""The data section of every training config (``config.data``).

All keys exist with defaults so the main configs can embed this ConfigDict, lock
it, and override only what they need (``--config.data.kind=vox`` ...).
"""

from __future__ import annotations

import ml_collections

from data_pipelines.degradation_config import default_degradation_config

KINDS = ("synthetic", "vox", "hdtf", "tfds")


def default_data_config() -> ml_collections.ConfigDict:
    """Every data knob with its default (synthetic data, Real-ESRGAN degradation)."""
    c = ml_collections.ConfigDict()
    # 'synthetic': procedural heads rendered on the fly (no files needed);
    # 'vox': FOMM/VoxCeleb folders (root/train, root/test, mp4 or frame folders);
    # 'hdtf': a folder of .mp4 clips (HDTF / TalkingHead-1KH), split 80/20 by name;
    # 'tfds': frames written by `python -m data_pipelines.prepare` (fast random access).
    c.kind = "synthetic"
    c.root = ""  # raw video folder for kind vox/hdtf
    c.tfds_dir = ""  # --out of data_pipelines.prepare for kind tfds
    c.tfds_name = "talking_head_frames"
    c.image_size = 256
    # The reference (HDTF and VoxCeleb configs): each epoch visits every identity
    # `num_repeats` times and draws one of its videos (identity = name before '#').
    c.id_sampling = False
    c.num_repeats = 1  # visits of each identity (or video) per epoch (DatasetRepeater)
    c.max_frame_distance = 0  # 0: source/driving anywhere in the clip
    c.train_fraction = 0.8  # used when root has no train/test folders
    c.max_frames_per_video = 0  # 0: all frames (raw folders only; caps decoding cost)
    c.video_cache_size = 8  # decoded raw videos kept per process
    c.augmentation = ml_collections.ConfigDict(
        {
            "flip": True,  # horizontal flip of both frames
            "time_flip": True,  # swap source and driving
            "brightness": 0.1,  # colour jitter, identical for both frames (FOMM)
            "contrast": 0.1,
            "saturation": 0.1,
            "hue": 0.1,
        }
    )
    c.degradation = default_degradation_config("realesrgan2")
    c.output_uint8 = False  # False: float32 in [0, 1]; True: raw uint8 (cast on device)
    c.worker_count = 0  # Grain worker processes (0: decode in the main process)
    c.worker_buffer_size = 2  # batches buffered per worker
    c.read_threads = 4  # threads that fetch/transform records before batching
    c.prefetch = 4  # batches prefetched by the reading threads (>= read_threads)
    c.synthetic = ml_collections.ConfigDict(
        {
            "num_train_identities": 200,
            "num_test_identities": 16,
            "frames_per_video": 64,
            "seed": 0,  # identity seeds; test identities are disjoint from train ones
        }
    )
    c.eval = ml_collections.ConfigDict(
        {
            "batch_size": 16,
            "max_videos": 0,  # 0: every test video
            "max_frames": 0,  # 0: every frame of each video
            "degradation_seed": 1234,  # fixed so evaluation sources are reproducible
        }
    )
    return c


def set_reconstruction_eval(data_config: ml_collections.ConfigDict, *, max_videos: int,
                            max_frames: int, degraded_source: bool) -> None:
    """Sets `data_config` (unlocked) for the FOMM reconstruction protocol: at most
    ``max_videos`` test videos and ``max_frames`` frames each, and the clean frame 0 as
    the generator's source (a sharp portrait, as at inference) unless
    ``degraded_source`` (then `source_lq` is degraded with `eval.degradation_seed`)."""
    data_config.eval.max_videos = max_videos
    data_config.eval.max_frames = max_frames
    if not degraded_source:
        data_config.degradation.preset = "none"  # source_lq is then the clean source
