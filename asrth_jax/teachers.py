"""The loss teachers: what the data teaches and the frozen networks that teach the rest.

- The batch keys of the truths a teacher reads (`POSE_KEY`, ...), which loss terms
  need them (`SYNTHETIC_TRUTH_TERMS`, `teacher_keys`) and which data kinds have them
  (`check_headpose_teacher`).
- `FrozenNetworks`: the perceptual trunk and the optional HopeNet head-pose teacher,
  loaded from their weights files; `check_teacher_files` refuses a missing or unusable
  file in one line before anything starts (it reads only the .npz headers).
- `headpose_weight`: the head-pose loss weight a trainer can honour.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zipfile

import ml_collections
from flax import nnx
from numpy.lib import format as npy_format

from asrth_jax.errors import ConfigError
from asrth_jax.models import vgg
from asrth_jax.models.hopenet import load_hopenet_npz

POSE_KEY = "driving_pose"  # (B, 3) true yaw, pitch, roll in degrees
CENTRE_KEY = "driving_centre"  # (B, 2) true head centre x, y in the keypoint frame
LANDMARKS_KEY = "driving_landmarks"  # (B, L, 2) true landmark pixels x, y
SOURCE_LANDMARKS_KEY = "source_landmarks"  # the same in the source frame
MOVING_MASK_KEY = "moving_mask"  # (B, H, W) bool: the head in either frame
HEADPOSE_TEACHERS = ("hopenet", "data")
# Loss terms taught by what only the synthetic renderer knows: (term, what it reads,
# the batch keys that hold it).
SYNTHETIC_TRUTH_TERMS = (
    ("head_translation", "head centres", (CENTRE_KEY,)),
    ("landmark_keypoints", "landmarks", (LANDMARKS_KEY,)),
    ("landmark_motion", "landmarks", (SOURCE_LANDMARKS_KEY, LANDMARKS_KEY)),
    ("background_motion", "head masks", (MOVING_MASK_KEY,)),
)
# Truths a prepared real dataset can hold too: the face-mesh landmarks that
# `data_pipelines.prepare --track-faces` stores (MediaPipe, not a true landmark: a
# teacher of our own, not the paper's).
PREPARED_TRUTHS = ("landmarks",)


def teacher_keys(loss: ml_collections.ConfigDict, pose_from_data: bool) -> tuple[str, ...]:
    """The batch keys (beyond the images) that the teachers which are on read."""
    keys = [POSE_KEY] if pose_from_data else []
    for term, _, term_keys in SYNTHETIC_TRUTH_TERMS:
        if loss[term]:
            keys += [k for k in term_keys if k not in keys]
    return tuple(keys)


@dataclasses.dataclass
class FrozenNetworks:
    """Fixed networks the losses use: perceptual trunk and optional HopeNet teacher."""

    perceptual: nnx.Module
    hopenet: nnx.Module | None

    @classmethod
    def from_config(cls, loss: ml_collections.ConfigDict) -> FrozenNetworks:
        """The teachers the loss weights use: a term whose weight is 0 loads no file
        (`--config.loss.headpose=0` trains without `weights/hopenet.npz`)."""
        check_teacher_files(loss)
        try:
            if loss.perceptual_network == "vgg19" and not perceptual_term_on(loss):
                # Its features are weighted 0 (XLA drops them): the trunk's shape only.
                perceptual = vgg.make_vgg19()
            else:
                perceptual = vgg.make_perceptual_network(loss.perceptual_network,
                                                         loss.vgg19_weights or None)
            hopenet = None
            if hopenet_teaches(loss):
                hopenet = load_hopenet_npz(loss.hopenet_weights)
                hopenet.eval()
        except ValueError as exc:  # weights of another network, or an unreadable file
            raise ConfigError(f"a teacher's weights cannot be used: {exc}") from None
        return cls(perceptual, hopenet)


def perceptual_term_on(loss: ml_collections.ConfigDict) -> bool:
    """The perceptual loss has a scale and a layer of non-zero weight."""
    return bool(loss.perceptual_scales) and any(loss.perceptual)


def hopenet_teaches(loss: ml_collections.ConfigDict) -> bool:
    """The head-pose loss is on and HopeNet (not the data) teaches it."""
    return bool(loss.headpose) and loss.headpose_teacher == "hopenet"


def check_headpose_teacher(loss: ml_collections.ConfigDict, data_kind: str) -> None:
    """One-line errors for a teacher that is not known or that the data cannot give."""
    if loss.headpose_teacher not in HEADPOSE_TEACHERS:
        raise ConfigError(f"config.loss.headpose_teacher must be one of {HEADPOSE_TEACHERS}, "
                          f"got {loss.headpose_teacher!r}")
    if loss.headpose_teacher == "data" and loss.headpose and data_kind != "synthetic":
        raise ConfigError(f"config.loss.headpose_teacher='data' needs true head poses, which "
                          f"only data.kind='synthetic' has (got {data_kind!r}); use 'hopenet' "
                          f"with config.loss.hopenet_weights")
    for term, truth, _ in SYNTHETIC_TRUTH_TERMS:
        prepared = truth in PREPARED_TRUTHS
        if loss[term] and data_kind != "synthetic" and not (prepared and data_kind == "tfds"):
            also = (" or a dataset from `data_pipelines.prepare --track-faces` (kind 'tfds')"
                    if prepared else "")
            raise ConfigError(f"config.loss.{term}={loss[term]} needs true {truth}, which "
                              f"only data.kind='synthetic'{also} has (got {data_kind!r}); set "
                              f"--config.loss.{term}=0")


def _missing(path: str) -> str | None:
    """Why a teacher file cannot be read, or None. Reads only the headers of the .npz
    members (not the arrays), so it is cheap enough to run before anything starts."""
    if not path:
        return "is empty"
    if not os.path.isfile(path):
        return f"names {path}, which does not exist"
    try:
        with zipfile.ZipFile(path) as archive:
            if not archive.namelist():
                return f"names {path}, which holds no arrays"
            for name in archive.namelist():
                with archive.open(name) as member:
                    version = npy_format.read_magic(member)
                    header = (npy_format.read_array_header_1_0 if version == (1, 0)
                              else npy_format.read_array_header_2_0)
                    if header(member)[2].hasobject:
                        return (f"names {path}, whose member {name} holds Python objects, "
                                "not weights")
    except zipfile.BadZipFile:
        return f"names {path}, which is not a .npz weights file"
    except (OSError, ValueError) as exc:
        return f"names {path}, which cannot be read ({' '.join(str(exc).split())[:120]})"
    return None


def check_teacher_files(loss: ml_collections.ConfigDict) -> None:
    """One-line ConfigError when the recipe needs a pretrained teacher whose file is
    not there or not a weights file (before any data or compile): the convert command
    that makes it, or the override that trains without it. A teacher whose loss weight
    is 0 is not needed. Nothing is dropped silently."""
    problems = []
    if loss.perceptual_network == "vgg19" and perceptual_term_on(loss) and \
            (why := _missing(loss.vgg19_weights)):
        problems.append(
            f"config.loss.perceptual_network='vgg19' needs config.loss.vgg19_weights, which "
            f"{why}: make it with `python -m asrth_jax.convert --vgg19 FILE --out DIR` and "
            "pass --config.loss.vgg19_weights=DIR/vgg19.npz, or train with the substitute "
            "--config.loss.perceptual_network=lpips_vgg16")
    if hopenet_teaches(loss) and (why := _missing(loss.hopenet_weights)):
        problems.append(
            f"config.loss.headpose={loss.headpose} with the HopeNet teacher needs "
            f"config.loss.hopenet_weights, which {why}: make it with `python -m "
            "asrth_jax.convert --hopenet FILE --out DIR` and pass "
            "--config.loss.hopenet_weights=DIR/hopenet.npz, or train without it: "
            "--config.loss.headpose=0")
    if problems:
        raise ConfigError("; ".join(problems))


def check_teachers(loss: ml_collections.ConfigDict, data_kind: str) -> None:
    """Every teacher the loss config names is known, available for this data, and its
    weights file exists (one-line ConfigError otherwise)."""
    check_headpose_teacher(loss, data_kind)
    check_teacher_files(loss)


def headpose_weight(loss: ml_collections.ConfigDict, has_teacher: bool) -> float:
    """The head-pose loss needs a teacher (HopeNet or true poses). Training refuses to
    start without it (`check_teacher_files`); a caller that builds its own frozen
    networks without HopeNet (the benchmark's random trunks) gets 0 and a warning."""
    if loss.headpose_teacher == "data":
        return float(loss.headpose)
    if loss.headpose and not has_teacher:
        logging.warning("no HopeNet teacher was given: head-pose loss weight %s is 0 in "
                        "this trainer", loss.headpose)
        return 0.0
    return float(loss.headpose)
