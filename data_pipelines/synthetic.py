"""Procedural talking heads: the project's own, shippable default dataset.

Each identity (a seed) gets a face colour, head shape, eye colour, hair colour and
fine skin/hair textures; each frame poses the head (yaw/pitch/roll + translation),
blinks and opens the mouth along smooth per-identity trajectories. The renderer
returns the true pose and 2D landmarks so keypoint/pose code can be checked
against ground truth. Textures carry pixel-level detail so that a degraded source
really loses information (super-resolution matters). Rendering is a handful of
OpenCV draws per frame and textures are cached per identity, so 64x64 frames render
at hundreds of frames per second, fast enough to generate training pairs on the fly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from data_pipelines.coordinates import keypoint_frame

# 3D landmark template on a unit head (x right, y down, z towards the camera).
LANDMARK_NAMES = (
    "left_brow", "right_brow", "left_eye", "right_eye", "nose_tip", "mouth_left",
    "mouth_right", "upper_lip", "lower_lip", "chin", "left_cheek", "right_cheek", "forehead",
)
_TEMPLATE = np.array(
    [
        [-0.36, -0.36, 0.86], [0.36, -0.36, 0.86], [-0.34, -0.16, 0.92], [0.34, -0.16, 0.92],
        [0.0, 0.12, 1.15], [-0.28, 0.46, 0.84], [0.28, 0.46, 0.84], [0.0, 0.40, 0.93],
        [0.0, 0.50, 0.90], [0.0, 0.92, 0.45], [-0.78, 0.20, 0.55], [0.78, 0.20, 0.55],
        [0.0, -0.70, 0.70],
    ],
    np.float64,
)
_HAIR_COLOURS = np.array(
    [[0.08, 0.06, 0.05], [0.30, 0.18, 0.10], [0.55, 0.40, 0.22], [0.85, 0.72, 0.45],
     [0.60, 0.25, 0.10], [0.55, 0.55, 0.55]]
)


def _mirror_name(name: str) -> str:
    return name.replace("left", "@").replace("right", "left").replace("@", "right")


# Landmark k of a horizontally mirrored frame is landmark MIRRORED_LANDMARKS[k] of the
# original, mirrored: the left eye of the mirror image is the original's right eye.
MIRRORED_LANDMARKS = tuple(LANDMARK_NAMES.index(_mirror_name(n)) for n in LANDMARK_NAMES)
TEST_IDENTITY_OFFSET = 1_000_000  # test identities never collide with train ones
# Largest per-identity motion amplitudes: yaw, pitch, roll (degrees), x, y translation
# (frame fractions), mouth opening. The head travels up to 12% of the frame sideways, as
# in cropped talking-head videos: at 64x64 that is 4-8 px, more than a CPU-trained
# model's blur, so a rendering that follows the driver is visibly (and measurably)
# better than one that keeps the source's pose.
MOTION_AMPLITUDE = np.array([25.0, 12.0, 8.0, 0.12, 0.08, 1.0])


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rx(pitch) Ry(yaw) Rz(roll), degrees: the model's (and the reference's)
    convention, so the true pose can teach the head-pose estimator directly."""
    p, y, r = (math.radians(a) for a in (pitch, yaw, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rx @ ry @ rz


@dataclass(frozen=True)
class Identity:
    """Appearance and motion parameters of one synthetic person."""

    seed: int
    skin: np.ndarray  # RGB float
    hair: np.ndarray
    eye: np.ndarray
    lips: np.ndarray
    background: np.ndarray
    head_w: float  # half-width of the head as a fraction of the frame
    head_h: float
    hair_drop: float  # how far the hair reaches down the sides
    # motion: amplitude (deg or frac) and angular frequency (rad/frame) and phase
    motion: np.ndarray  # (6, 3): yaw, pitch, roll, tx, ty, mouth


@lru_cache(maxsize=4096)
def make_identity(identity_seed: int) -> Identity:
    rng = np.random.default_rng(np.random.SeedSequence([int(identity_seed), 7]))
    tone = rng.uniform(0.25, 1.0)
    skin = np.array([0.95, 0.78, 0.66]) * tone + rng.uniform(-0.05, 0.05, 3)
    amp = MOTION_AMPLITUDE * rng.uniform(0.5, 1.0, 6)
    freq = rng.uniform(0.03, 0.12, 6)
    phase = rng.uniform(0, 2 * np.pi, 6)
    return Identity(
        seed=int(identity_seed),
        skin=np.clip(skin, 0.05, 1.0),
        hair=_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.7, 1.1),
        eye=rng.uniform(0.1, 0.8, 3),
        lips=np.clip(skin * np.array([0.9, 0.45, 0.45]) + 0.05, 0, 1),
        background=np.clip(rng.uniform(0.2, 0.8) + rng.uniform(-0.15, 0.15, 3), 0, 1),
        head_w=float(rng.uniform(0.23, 0.30)),
        head_h=float(rng.uniform(0.30, 0.37)),
        hair_drop=float(rng.uniform(0.0, 0.15)),
        motion=np.stack([amp, freq, phase], axis=1),
    )


@lru_cache(maxsize=256)
def _textures(identity_seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(background, skin, hair) float32 size x size x 3 textures of one identity.

    Skin: base colour, soft shading and per-pixel pores/freckles; hair: fine
    oriented strands. Both hold energy up to the Nyquist frequency on purpose.
    """
    ident = make_identity(identity_seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(identity_seed), 11, size]))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    bg = ident.background[None, None] * (0.8 + 0.4 * yy[..., None])
    waves = np.sin(2 * np.pi * (xx * rng.uniform(2, 6) + yy * rng.uniform(1, 4)))
    bg = bg + 0.06 * waves[..., None]
    bg = bg + rng.normal(0, 0.02, (size, size, 1))
    pores = rng.normal(0, 0.05 + 0.04 * rng.uniform(), (size, size, 1))
    freckles = (rng.random((size, size, 1)) < rng.uniform(0.0, 0.04)) * -0.15
    skin = ident.skin[None, None] * (1.0 + pores + freckles)
    angle = rng.uniform(-0.5, 0.5)
    strands = np.sin(
        2 * np.pi * (xx * math.cos(angle) + yy * math.sin(angle)) * size * rng.uniform(0.25, 0.45)
        + 3.0 * rng.normal(0, 1, (size, size)).astype(np.float32) * 0.3
    )
    hair = ident.hair[None, None] * (1.0 + 0.45 * strands[..., None]) + 0.05 * rng.normal(
        0, 1, (size, size, 1)
    )
    return tuple(np.clip(t, 0, 1).astype(np.float32) for t in (bg, skin, hair))


def frame_state(identity_seed: int, t: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Pose (yaw, pitch, roll degrees), translation (tx, ty frame fractions), blink, mouth."""
    ident = make_identity(identity_seed)
    amp, freq, phase = ident.motion.T
    wave = amp * np.sin(freq * t + phase)
    pose = wave[:3]
    trans = wave[3:5]
    mouth = float(np.clip(0.5 + 0.6 * math.sin(freq[5] * 2.3 * t + phase[5]), 0.0, 1.0))
    period = 25 + (identity_seed % 17)  # blink every ~1-2 s, lasting ~4 frames
    blink = float(max(0.0, 1.0 - abs(((t + identity_seed) % period) - 2.0) / 2.0))
    return pose, trans, blink, mouth


def centre_pixels(trans: np.ndarray, size: int) -> np.ndarray:
    """(2,) pixel (x, y) the head turns about: the frame's (0.5, 0.52) plus translation."""
    return np.array([0.5 + trans[0], 0.52 + trans[1]]) * size


def head_centre(trans: np.ndarray, size: int) -> np.ndarray:
    """(2,) head centre (x, y), the point the head turns about, in the keypoint frame."""
    return keypoint_frame(centre_pixels(trans, size), size).astype(np.float32)


def project_landmarks(identity_seed: int, pose: np.ndarray, trans: np.ndarray, size: int,
                      mouth: float = 0.0) -> np.ndarray:
    """(L, 2) pixel coordinates (x, y) of the template landmarks under pose + translation."""
    ident = make_identity(identity_seed)
    pts = _TEMPLATE.copy()
    pts[8, 1] += 0.18 * mouth  # lower lip follows the jaw
    pts[9, 1] += 0.10 * mouth
    scale = np.array([ident.head_w, ident.head_h, ident.head_w]) * size
    rotated = (pts @ rotation_matrix(*pose).T) * scale
    centre = centre_pixels(trans, size)
    return (rotated[:, :2] + centre).astype(np.float32)


def _pt(p: np.ndarray, shift: int = 4) -> tuple[int, int]:
    """Sub-pixel point for cv2 drawing with ``shift`` fractional bits (smooth motion)."""
    return int(round(p[0] * (1 << shift))), int(round(p[1] * (1 << shift)))


def _colour(c: np.ndarray) -> tuple[float, float, float]:
    return float(c[0]), float(c[1]), float(c[2])


def _head_alphas(identity_seed: int, pose: np.ndarray, trans: np.ndarray, size: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased uint8 (size, size) coverage of the hair and of the face (skin)."""
    ident = make_identity(identity_seed)
    yaw, pitch, roll = (float(a) for a in pose)
    centre = centre_pixels(trans, size)
    axes_w = ident.head_w * size * (0.92 + 0.08 * math.cos(math.radians(yaw)))
    axes_h = ident.head_h * size * (0.95 + 0.05 * math.cos(math.radians(pitch)))
    hair_mask = np.zeros((size, size), np.uint8)
    up = np.array([math.sin(math.radians(roll)), -math.cos(math.radians(roll))])
    hc = centre + up * ident.head_h * size * 0.18
    cv2.ellipse(hair_mask, _pt(hc), _pt(np.array([axes_w * 1.1, axes_h * 0.95])), -roll,
                0, 360, 255, -1, cv2.LINE_AA, 4)
    face_mask = np.zeros((size, size), np.uint8)
    fc = centre + up * -ident.head_h * size * 0.08
    cv2.ellipse(face_mask, _pt(fc), _pt(np.array([axes_w * 0.95, axes_h * 0.9])), -roll,
                0, 360, 255, -1, cv2.LINE_AA, 4)
    # a hairline: remove the top of the face so hair shows on the forehead
    cut = hc + up * (0.22 - ident.hair_drop) * ident.head_h * size
    cv2.ellipse(face_mask, _pt(cut), _pt(np.array(
        [axes_w * 1.2, axes_h * 0.45])), -roll, 180, 360, 0, -1, cv2.LINE_AA, 4)
    return hair_mask, face_mask


def head_mask(identity_seed: int, t: float, size: int) -> np.ndarray:
    """(size, size) bool: every pixel the head (hair or skin) covers in frame ``t``, its
    anti-aliased rim included (everything that is not pure background)."""
    pose, trans, _, _ = frame_state(identity_seed, t)
    hair, face = _head_alphas(identity_seed, pose, trans, size)
    return (hair > 0) | (face > 0)


def render_frame(
    identity_seed: int, t: float, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame: uint8 (size, size, 3) RGB, pose (3,) degrees, landmarks (L, 2)."""
    ident = make_identity(identity_seed)
    bg, skin_tex, hair_tex = _textures(identity_seed, size)
    pose, trans, blink, mouth = frame_state(identity_seed, t)
    lm = project_landmarks(identity_seed, pose, trans, size, mouth)
    yaw, pitch, roll = (float(a) for a in pose)
    img = bg.copy()
    centre = centre_pixels(trans, size)
    # Textures slide with the head so the skin/hair pattern moves with it.
    shift_x = centre[0] - size / 2 + math.sin(math.radians(yaw)) * ident.head_w * size * 0.6
    shift_y = centre[1] - size / 2 + math.sin(math.radians(pitch)) * ident.head_h * size * 0.4
    warp = cv2.getRotationMatrix2D((size / 2, size / 2), -roll, 1.0)
    warp[:, 2] += (shift_x, shift_y)

    def paste(texture: np.ndarray, mask: np.ndarray) -> None:
        moved = cv2.warpAffine(texture, warp, (size, size), borderMode=cv2.BORDER_REFLECT)
        alpha = (mask.astype(np.float32) * (1.0 / 255.0))[..., None]
        img[:] = img * (1 - alpha) + moved * alpha

    hair_mask, face_mask = _head_alphas(identity_seed, pose, trans, size)
    paste(hair_tex, hair_mask)
    paste(skin_tex, face_mask)

    unit = size / 64.0
    lw = max(1, int(round(unit)))
    cos_yaw = max(0.3, math.cos(math.radians(yaw)))
    for brow in lm[0:2]:
        d = np.array([4 * unit * cos_yaw, 0])
        cv2.line(img, _pt(brow - d), _pt(brow + d), _colour(ident.hair * 0.7), lw, cv2.LINE_AA, 4)
    for eye in lm[2:4]:
        ax = np.array([3.6 * unit * cos_yaw, max(0.3, 2.0 * unit * (1 - blink))])
        cv2.ellipse(img, _pt(eye), _pt(ax), -roll, 0, 360, (0.95, 0.95, 0.92), -1,
                    cv2.LINE_AA, 4)
        if blink < 0.6:
            iris = max(0.8, 1.6 * unit * (1 - blink))
            cv2.circle(img, _pt(eye), int(iris * 16), _colour(ident.eye), -1, cv2.LINE_AA, 4)
            cv2.circle(img, _pt(eye), int(iris * 8), (0.03, 0.03, 0.03), -1, cv2.LINE_AA, 4)
        cv2.ellipse(img, _pt(eye), _pt(ax), -roll, 0, 360, _colour(ident.skin * 0.5), lw,
                    cv2.LINE_AA, 4)
    bridge = (lm[2] + lm[3]) / 2
    cv2.line(img, _pt(bridge), _pt(lm[4]), _colour(ident.skin * 0.75), lw, cv2.LINE_AA, 4)
    cv2.circle(img, _pt(lm[4]), int(1.2 * unit * 16), _colour(ident.skin * 0.8), -1,
               cv2.LINE_AA, 4)
    mouth_pts = np.stack([lm[5], lm[7], lm[6], lm[8]])
    cv2.fillPoly(img, [np.array([_pt(p) for p in mouth_pts], np.int32)],
                 _colour(ident.lips * 0.5 if mouth > 0.15 else ident.lips), cv2.LINE_AA, 4)
    if mouth > 0.35:  # teeth
        a, b = lm[5] * 0.7 + lm[6] * 0.3, lm[5] * 0.3 + lm[6] * 0.7
        tooth = lm[7] + np.array([0.0, 1.0 * unit])
        cv2.line(img, _pt(a + tooth - lm[7]), _pt(b + tooth - lm[7]), (0.95, 0.95, 0.9),
                 lw, cv2.LINE_AA, 4)
    cv2.polylines(img, [np.array([_pt(p) for p in mouth_pts], np.int32)], True,
                  _colour(ident.lips * 0.8), lw, cv2.LINE_AA, 4)
    frame = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return frame, np.asarray(pose, np.float32), lm


def render_video(identity_seed: int, num_frames: int, size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """frames uint8 [T, H, W, 3], pose [T, 3] (yaw, pitch, roll degrees), landmarks [T, L, 2]."""
    out = [render_frame(identity_seed, t, size) for t in range(num_frames)]
    frames, poses, lms = zip(*out, strict=True)
    return np.stack(frames), np.stack(poses), np.stack(lms)


def identity_seeds(split: str, num_identities: int, seed: int = 0) -> list[int]:
    """Identity seeds of a split; test identities are disjoint from train ones."""
    if split not in ("train", "test"):
        raise ValueError(f"synthetic split must be 'train' or 'test', got {split!r}")
    base = seed * 10_000_000 + (TEST_IDENTITY_OFFSET if split == "test" else 0)
    return [base + i for i in range(num_identities)]


class SyntheticVideos:
    """VideoCollection of synthetic clips: one clip per identity, rendered on demand."""

    def __init__(self, identities: Sequence[int], frames_per_video: int, size: int):
        self.identities = list(identities)
        self.frames_per_video = int(frames_per_video)
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.identities)

    def num_frames(self, video: int) -> int:
        return self.frames_per_video

    def name(self, video: int) -> str:
        return f"synth{self.identities[video]}#clip#0#{self.frames_per_video}"

    def read_frames(self, video: int, frame_indices: Sequence[int]) -> np.ndarray:
        ident = self.identities[video]
        return np.stack([render_frame(ident, int(t), self.size)[0] for t in frame_indices])

    def head_poses(self, video: int, frame_indices: Sequence[int]) -> np.ndarray:
        """True (len(frame_indices), 3) yaw, pitch, roll in degrees."""
        ident = self.identities[video]
        return np.stack([frame_state(ident, int(t))[0] for t in frame_indices]).astype(
            np.float32)

    def head_centres(self, video: int, frame_indices: Sequence[int]) -> np.ndarray:
        """True (len(frame_indices), 2) head centres (`head_centre`, keypoint frame)."""
        ident = self.identities[video]
        return np.stack([head_centre(frame_state(ident, int(t))[1], self.size)
                         for t in frame_indices])

    def pose_and_landmarks(self, video: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth pose (3,) degrees and landmarks (L, 2) of frame ``t``."""
        ident = self.identities[video]
        pose, trans, _, mouth = frame_state(ident, t)
        return (np.asarray(pose, np.float32),
                project_landmarks(ident, pose, trans, self.size, mouth))

    def landmarks(self, video: int, frame_indices: Sequence[int]) -> np.ndarray:
        """True (len(frame_indices), L, 2) landmark pixels (x, y; pixel centres at integers),
        the ones `render_frame` draws; motion metrics read them for evaluation pairs."""
        return np.stack([self.pose_and_landmarks(video, int(t))[1] for t in frame_indices])

    def head_masks(self, video: int, frame_indices: Sequence[int]) -> np.ndarray:
        """(len(frame_indices), size, size) bool head coverage (`head_mask`) per frame."""
        ident = self.identities[video]
        return np.stack([head_mask(ident, int(t), self.size) for t in frame_indices])
