"""Semi-synthetic 2-D human figures with the 16 MPII joints and their keypoints, in two domains.

SEMI-SYNTHETIC: no real pose data set with a domain shift ships in any package reachable here, so the
figures are generated; the target domain's textures and backgrounds are real photographs (scikit-learn's
and scikit-image's bundled ones). Name it so wherever a number from it is reported.

A figure is a kinematic tree rooted at the pelvis: torso, neck and head, two arms and two legs, with
per-figure proportions and joint angles drawn within human-like limits (lean +-25 deg, shoulders
-30..170 deg from hanging, elbows and knees bent 0..145 / 0..140 deg, hips -20..80 deg). A body yaw
(0..360 deg) narrows the shoulders and hips and orders the parts in depth: the far arm and leg are
drawn first, the near ones last (arms also get a random depth, in front of or behind the torso).
Limbs are capsules with widths, the torso a quadrilateral, the head an ellipse with a face cue that turns
with the body: hair on the back of the head and the crown, skin and two eyes on the front (a figure
seen from behind shows only hair). Without it the figure turned by 180 degrees with its left and right
draws swapped is pixel-identical with swapped labels (``mirror_twin``); with it, the image determines
the figure's left and right, and a mirrored image is still a consistent figure (flip augmentation
holds). A joint covered by
a nearer part that is not its own (or by an occluder) is labelled but not visible (COCO ``v = 1``).

- ``flat`` (source): flat-shaded parts (skin, shirt and trousers colours; the far side darker) on a
  plain background, like a synthetic renderer.
- ``photo`` (target): parts textured with crops of real photographs over a real-photograph
  background, then a different lighting (gain, gamma, a brightness gradient) and contrast, blur,
  noise, and 0-2 occluding photograph patches.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed writes the same files.
Output: ``<root>/pose_figures/<domain>_<split>/`` PNGs and ``annotations.json`` (COCO keypoints, with
the joint names, the skeleton and sfda's ``flip_pairs`` in the category), read by the same loader as a
user's data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fetch import register_generated, write_json
from ..photos import random_crop, skimage_photographs, sklearn_photographs

JOINTS = (
    "r_ankle",
    "r_knee",
    "r_hip",
    "l_hip",
    "l_knee",
    "l_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "r_wrist",
    "r_elbow",
    "r_shoulder",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
)
SKELETON = (
    (0, 1),
    (1, 2),
    (2, 6),
    (3, 6),
    (3, 4),
    (4, 5),
    (6, 7),
    (7, 8),
    (8, 9),
    (10, 11),
    (11, 12),
    (12, 7),
    (13, 7),
    (13, 14),
    (14, 15),
)
FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
CANVAS = 128
# 2: the face cue (version 1 figures could not tell their left from their right); data written by another
# version is generated again on first use
GENERATOR_VERSION = 2
COUNTS = {("flat", "train"): 5000, ("photo", "train"): 2000, ("photo", "test"): 500}
SEEDS = {("flat", "train"): 1001, ("photo", "train"): 2002, ("photo", "test"): 3003}
# (part, joints it joins, width as a fraction of the torso length, colour group)
LIMBS = (
    ("r_upper_arm", (12, 11), 0.17, "shirt"),
    ("r_forearm", (11, 10), 0.13, "skin"),
    ("l_upper_arm", (13, 14), 0.17, "shirt"),
    ("l_forearm", (14, 15), 0.13, "skin"),
    ("r_thigh", (2, 1), 0.24, "trousers"),
    ("r_shin", (1, 0), 0.17, "trousers"),
    ("l_thigh", (3, 4), 0.24, "trousers"),
    ("l_shin", (4, 5), 0.17, "trousers"),
    ("neck", (7, 8), 0.14, "skin"),
)
PART_JOINTS = {name: set(joints) for name, joints, _, _ in LIMBS} | {
    "torso": {2, 3, 6, 7, 12, 13},
    "head": {8, 9},
}


@dataclass
class Side:
    """The draws of one side (right or left): arm and leg angles from hanging, the forearm and shin bends
    (signed, radians) and the arm's depth offset (in front of or behind the torso)."""

    arm: float
    forearm_bend: float
    leg: float
    shin_bend: float
    arm_depth: float


@dataclass
class Posture:
    """Every random draw of one figure's pose: proportions (torso length 1), lean and yaw (radians), the
    neck and head tilts, each side's draws, the scale (fraction of the canvas) and the offset (fraction of
    the room left). ``place`` turns it into canvas pixels."""

    proportions: dict[str, float]
    lean: float
    yaw: float
    neck_tilt: float
    head_tilt: float
    sides: dict[str, Side]
    scale: float
    offset: tuple[float, float]


@dataclass
class Figure:
    """A posed figure: ``joints (16, 2)`` in canvas pixels, ``depth`` per part (larger = farther), the torso
    length in pixels and the body yaw (0: facing the viewer; the face turns with it)."""

    joints: np.ndarray
    depth: dict[str, float]
    torso: float
    yaw: float = 0.0


def direction(angle: float) -> np.ndarray:
    """Unit vector at ``angle`` radians from straight down (image y grows downwards), counter-clockwise."""
    return np.array([math.sin(angle), math.cos(angle)])


def draw_posture(rng: np.random.Generator) -> Posture:
    """The random draws of one figure, within human-like limits (see the module docstring)."""
    base = {"neck": 0.25, "head": 0.42, "upper_arm": 0.55, "forearm": 0.5, "thigh": 0.75, "shin": 0.7,
            "shoulder": 0.36, "hip": 0.2}
    proportions = {k: v * rng.uniform(0.9, 1.1) for k, v in base.items()}
    lean, yaw = math.radians(rng.uniform(-25, 25)), rng.uniform(0, 2 * math.pi)
    neck_tilt, head_tilt = math.radians(rng.uniform(-20, 20)), math.radians(rng.uniform(-25, 25))
    sides = {}
    for side in ("r", "l"):
        arm = math.radians(rng.uniform(-30, 170))
        forearm_bend = rng.choice([-1, 1]) * math.radians(rng.uniform(0, 145))
        leg = math.radians(rng.uniform(-20, 80) if rng.random() < 0.3 else rng.uniform(-10, 25))
        shin_bend = rng.choice([-1, 1]) * math.radians(rng.uniform(0, 140))
        sides[side] = Side(arm, float(forearm_bend), leg, float(shin_bend), rng.uniform(-0.8, 0.8))
    offset = (rng.uniform(0, 1), rng.uniform(0, 1))
    return Posture(proportions, lean, yaw, neck_tilt, head_tilt, sides, rng.uniform(0.6, 0.88), offset)


def mirror_twin(posture: Posture) -> Posture:
    """The figure turned by 180 degrees with its right and left draws swapped: without a cue that tells the
    front from the back, it is drawn on the very pixels of ``posture`` with its left and right labels
    swapped (the ambiguity the face cue removes)."""
    sides = {"r": posture.sides["l"], "l": posture.sides["r"]}
    return Posture(posture.proportions, posture.lean, (posture.yaw + math.pi) % (2 * math.pi),
                   posture.neck_tilt, posture.head_tilt, sides, posture.scale, posture.offset)


def place(posture: Posture) -> Figure:
    """Joint positions in a body frame (pelvis at 0, torso length 1), then on the canvas at the posture's
    scale and offset."""
    p, lean, yaw = posture.proportions, posture.lean, posture.yaw
    facing = math.copysign(max(abs(math.cos(yaw)), 0.2), math.cos(yaw))  # +: facing the viewer
    up, across = -direction(lean), np.array([math.cos(lean), -math.sin(lean)])  # body up, body right-to-left
    j = np.zeros((16, 2))
    j[7] = up
    j[8] = j[7] + p["neck"] * -direction(lean + posture.neck_tilt)
    j[9] = j[8] + p["head"] * -direction(lean + posture.head_tilt)
    # the figure's right is on the viewer's left when it faces the viewer
    for side, shoulder, hip, sign in (("r", 12, 2, -1.0), ("l", 13, 3, 1.0)):
        draws = posture.sides[side]
        j[shoulder] = j[7] + sign * facing * p["shoulder"] * across
        j[hip] = j[6] + sign * facing * p["hip"] * across
        outward = sign * math.copysign(1.0, facing)  # which way "away from the body" turns on the canvas
        elbow, wrist = (11, 10) if side == "r" else (14, 15)
        knee, ankle = (1, 0) if side == "r" else (4, 5)
        arm = lean + outward * draws.arm
        j[elbow] = j[shoulder] + p["upper_arm"] * direction(arm)
        j[wrist] = j[elbow] + p["forearm"] * direction(arm + draws.forearm_bend)
        leg = lean + outward * draws.leg
        j[knee] = j[hip] + p["thigh"] * direction(leg)
        j[ankle] = j[knee] + p["shin"] * direction(leg + draws.shin_bend)
    far = math.sin(yaw)  # > 0: the figure's right side is the far one
    depth = {"torso": 0.0, "neck": -0.05, "head": -0.1}
    for name, *_ in LIMBS[:-1]:
        side = name[0]
        arm_depth = posture.sides[side].arm_depth if "arm" in name else 0.0
        depth[name] = (far if side == "r" else -far) + arm_depth
    extent = j.max(axis=0) - j.min(axis=0) + 0.5  # + room for widths and the head
    torso = posture.scale * CANVAS / extent.max()
    placed = (j - j.min(axis=0) + 0.25) * torso
    room = CANVAS - (placed.max(axis=0) + 0.25 * torso)
    offset = np.array([f * max(r, 0) for f, r in zip(posture.offset, room, strict=True)])
    return Figure(joints=placed + offset, depth=depth, torso=torso, yaw=yaw)


def pose(rng: np.random.Generator) -> Figure:
    """One random figure on the canvas."""
    return place(draw_posture(rng))


def head_geometry(figure: Figure) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """The head ellipse: centre, unit axis towards the head top, unit axis across (viewer's right when
    upright), and the half length and half width in pixels."""
    j, t = figure.joints, figure.torso
    centre, axis = (j[8] + j[9]) / 2, j[9] - j[8]
    up = axis / max(np.linalg.norm(axis), 1e-6)
    return centre, up, np.array([-up[1], up[0]]), np.linalg.norm(axis) / 2 + 0.04 * t, 0.17 * t


def face_marks(figure: Figure) -> tuple[np.ndarray, np.ndarray]:
    """``(hair, eyes)`` boolean ``(CANVAS, CANVAS)`` masks on the head, drawn as on a turning ellipsoid: the
    hemisphere the face points to is skin with two eyes, the other one (and the crown) hair. The face
    points along the yaw (longitude ``-yaw`` seen from the viewer), so the image tells the front from the
    back, and with it the figure's right from its left; a mirrored image stays a consistent figure."""
    centre, up, across, half_length, half_width = head_geometry(figure)
    rows, cols = np.mgrid[0:CANVAS, 0:CANVAS] + 0.5
    offset = np.stack([cols - centre[0], rows - centre[1]], axis=-1)
    r = (offset @ up) / half_length  # latitude-like, 1 at the head top
    s = (offset @ across) / half_width
    inside = r**2 + s**2 <= 1
    longitude = np.arcsin(np.clip(s / np.sqrt(np.clip(1 - r**2, 1e-6, None)), -1, 1))
    face = -figure.yaw
    hair = inside & ((np.cos(longitude - face) < 0) | (r > 0.55))
    eyes = np.zeros_like(inside)
    radius, height = max(0.9, 0.045 * figure.torso), 0.12  # pixels; eye level on the head's axis
    for eye in (face - 0.5, face + 0.5):
        if math.cos(eye) > 0.2:  # on the visible hemisphere
            ex = math.sin(eye) * math.sqrt(1 - height**2)
            eyes |= inside & (((s - ex) * half_width) ** 2 + ((r - height) * half_length) ** 2 <= radius**2)
    return hair, eyes


def part_masks(figure: Figure) -> dict[str, np.ndarray]:
    """``{part: (CANVAS, CANVAS) bool}`` of the limbs (capsules), the torso and the head (an ellipse)."""
    from PIL import Image, ImageDraw

    j, t = figure.joints, figure.torso
    masks = {}

    def canvas():
        image = Image.new("L", (CANVAS, CANVAS), 0)
        return image, ImageDraw.Draw(image)

    for name, (a, b), width, _ in LIMBS:
        image, draw = canvas()
        w = max(2.0, width * t)
        draw.line([tuple(j[a]), tuple(j[b])], fill=255, width=int(round(w)))
        for end in (j[a], j[b]):
            draw.ellipse([end[0] - w / 2, end[1] - w / 2, end[0] + w / 2, end[1] + w / 2], fill=255)
        masks[name] = np.asarray(image) > 0
    image, draw = canvas()
    draw.polygon([tuple(j[12]), tuple(j[13]), tuple(j[3]), tuple(j[2])], fill=255)
    for point in (j[12], j[13], j[2], j[3]):  # rounded shoulders and hips, so a side view keeps a body
        r = 0.14 * t
        draw.ellipse([point[0] - r, point[1] - r, point[0] + r, point[1] + r], fill=255)
    masks["torso"] = np.asarray(image) > 0
    image, draw = canvas()
    centre, half_length = (j[8] + j[9]) / 2, np.linalg.norm(j[9] - j[8]) / 2 + 0.04 * t
    angle = math.degrees(math.atan2(*(j[9] - j[8])[::-1]))
    head = Image.new("L", (CANVAS * 2, CANVAS * 2), 0)
    ImageDraw.Draw(head).ellipse(
        [CANVAS - half_length, CANVAS - 0.17 * t, CANVAS + half_length, CANVAS + 0.17 * t], fill=255
    )
    head = head.rotate(-angle, center=(CANVAS, CANVAS))
    image.paste(
        head.crop(
            (
                int(CANVAS - centre[0]),
                int(CANVAS - centre[1]),
                int(CANVAS - centre[0]) + CANVAS,
                int(CANVAS - centre[1]) + CANVAS,
            )
        )
    )
    masks["head"] = np.asarray(image) > 0
    return masks


def paint(
    rng: np.random.Generator,
    domain: str,
    figure: Figure,
    masks: dict[str, np.ndarray],
    photos: list[np.ndarray],
    face_cue: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The RGB canvas (float, 0-255), the owner map (``(CANVAS, CANVAS)`` index into the returned part
    ``order``, -1 background) and that order: parts painted far to near."""
    if domain == "flat":
        canvas = np.ones((CANVAS, CANVAS, 3)) * rng.uniform(0, 255, 3)
        colours = {
            "skin": rng.uniform(120, 255, 3) * np.array([1.0, 0.8, 0.65]),
            "shirt": rng.uniform(0, 255, 3),
            "trousers": rng.uniform(0, 200, 3),
            "hair": rng.uniform(0, 90, 3),
        }
    else:
        canvas = random_crop(rng, photos, CANVAS, CANVAS)
        colours = {group: random_crop(rng, photos, CANVAS, CANVAS) for group in ("skin", "shirt", "trousers")}
        colours["hair"] = random_crop(rng, photos, CANVAS, CANVAS) * 0.35
    hair, eyes = face_marks(figure)
    groups = {name: group for name, _, _, group in LIMBS} | {"torso": "shirt", "head": "skin"}
    order = sorted(masks, key=lambda name: -figure.depth[name])
    owner = np.full((CANVAS, CANVAS), -1)
    for index, name in enumerate(order):
        fill = colours[groups[name]] * (0.8 if figure.depth[name] > 0.3 else 1.0)  # the far side in shadow
        canvas[masks[name]] = fill[masks[name]] if fill.ndim == 3 else fill
        owner[masks[name]] = index
        if name == "head" and face_cue:  # the face cue: hair on the back and crown, eyes on the front
            on_head = hair & masks[name]
            canvas[on_head] = colours["hair"][on_head] if colours["hair"].ndim == 3 else colours["hair"]
            canvas[eyes & masks[name]] = 20.0
    return canvas, owner, order


def keypoints(figure: Figure, owner: np.ndarray, order: list[str]) -> np.ndarray:
    """``(16, 3)`` COCO keypoints ``x, y, v``: v = 2 visible, 1 covered by a part that is not the joint's
    own or by an occluder (owner -2), 0 outside the canvas (then x = y = 0)."""
    out = np.zeros((16, 3))
    for k, (x, y) in enumerate(figure.joints):
        col, row = int(math.floor(x)), int(math.floor(y))
        if not (0 <= col < CANVAS and 0 <= row < CANVAS):
            continue
        on_top = owner[row, col]
        own = on_top == -1 or (on_top >= 0 and k in PART_JOINTS[order[on_top]])
        out[k] = (x, y, 2 if own else 1)
    return out


def shift_domain(
    rng: np.random.Generator, canvas: np.ndarray, owner: np.ndarray, figure: Figure, photos: list[np.ndarray]
) -> np.ndarray:
    """The target's look: occluding photograph patches (owner set to -2), lighting, contrast, blur, noise."""
    from scipy.ndimage import gaussian_filter

    for _ in range(rng.integers(0, 3)):
        centre = figure.joints[rng.integers(16)] + rng.normal(0, 4, 2)
        half = rng.uniform(0.15, 0.35) * figure.torso
        r0, r1 = int(max(centre[1] - half, 0)), int(min(centre[1] + half, CANVAS))
        c0, c1 = int(max(centre[0] - half, 0)), int(min(centre[0] + half, CANVAS))
        if r1 > r0 and c1 > c0:
            canvas[r0:r1, c0:c1] = random_crop(rng, photos, r1 - r0, c1 - c0)
            owner[r0:r1, c0:c1] = -2
    image = canvas / 255.0
    gradient = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(1.0, 1.4), CANVAS)
    image = image * (gradient[None, :, None] if rng.random() < 0.5 else gradient[:, None, None])
    image = np.clip(image * rng.uniform(0.6, 1.3), 0, 1) ** rng.uniform(0.6, 1.6)
    image = (image - image.mean()) * rng.uniform(0.6, 1.2) + image.mean()
    image = gaussian_filter(image, sigma=(rng.uniform(0.3, 1.3),) * 2 + (0,))
    image = image + rng.normal(0, rng.uniform(0.01, 0.05), image.shape)
    return np.clip(image * 255, 0, 255)


def render(
    rng: np.random.Generator, domain: str, photos: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list]:
    """One image (``CANVAS x CANVAS x 3 uint8``), its ``(16, 3)`` keypoints and the figure's box
    ``[x, y, w, h]`` (the extent of its parts)."""
    return render_figure(rng, domain, pose(rng), photos)


def render_figure(
    rng: np.random.Generator, domain: str, figure: Figure, photos: list[np.ndarray], face_cue: bool = True
) -> tuple[np.ndarray, np.ndarray, list]:
    """``render`` of a given figure (``face_cue`` False: without the face, to show what it resolves)."""
    masks = part_masks(figure)
    canvas, owner, order = paint(rng, domain, figure, masks, photos, face_cue)
    if domain == "photo":
        canvas = shift_domain(rng, canvas, owner, figure, photos)
    rows, cols = np.nonzero(np.any(np.stack(list(masks.values())), axis=0))
    box = [
        int(cols.min()),
        int(rows.min()),
        int(cols.max() - cols.min() + 1),
        int(rows.max() - rows.min() + 1),
    ]
    return canvas.round().astype(np.uint8), keypoints(figure, owner, order), box


def category() -> dict:
    """The COCO person category with the MPII joint names, the 1-based skeleton and sfda's flip pairs."""
    return {
        "id": 1,
        "name": "person",
        "keypoints": list(JOINTS),
        "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
        "flip_pairs": [list(p) for p in FLIP_PAIRS],
    }


def generate(root: Path, domain: str, split: str, count: int | None = None, seed: int | None = None) -> Path:
    """Write ``count`` images (default: the benchmark's) of ``domain``/``split`` and their COCO keypoints
    ``annotations.json`` under ``root``; returns the JSON's path."""
    from PIL import Image

    if (domain, split) not in COUNTS:
        raise ValueError(
            f"pose figures: unknown part {domain}_{split}; expected one of {[f'{d}_{s}' for d, s in COUNTS]}"
        )
    count = COUNTS[domain, split] if count is None else count
    rng = np.random.default_rng(SEEDS[domain, split] if seed is None else seed)
    photos = sklearn_photographs() + skimage_photographs() if domain == "photo" else []
    folder = Path(root) / "pose_figures" / f"{domain}_{split}"
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for number in range(count):
        image, points, box = render(rng, domain, photos)
        file_name = f"{number:05d}.png"
        Image.fromarray(image).save(folder / file_name)
        images.append({"id": number, "file_name": file_name, "width": CANVAS, "height": CANVAS})
        annotations.append(
            {
                "id": number,
                "image_id": number,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": box,
                "area": box[2] * box[3],
                "num_keypoints": int((points[:, 2] > 0).sum()),
                "keypoints": [round(float(v), 2) for v in points.reshape(-1)],
            }
        )
    payload = {
        "info": {"description": f"SEMI-SYNTHETIC pose figures, {domain} domain, {split} split",
                 "generator_version": GENERATOR_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": [category()],
    }
    return write_json(folder / "annotations.json", payload)


register_generated("pose_figures", "demo://pose_figures/<flat_train|photo_train|photo_test>.json", generate,
                   version=GENERATOR_VERSION)
