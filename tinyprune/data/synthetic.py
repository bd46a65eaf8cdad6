"""Images and labels for the pruning tutorial, from disk to batches.

The course trains MobileNet v1 (width 0.25) on Visual Wake Words: 96 x 96 RGB
images with one binary label, 1 when a person is in the picture. This module
brings that data to the training loop in five steps, in reading order:

1. ``SyntheticVWW`` draws a stand-in data set (the machines this runs on have
   no internet): stick-and-block people versus the same parts jumbled.
2. ``VisualWakeWords`` reads the real data set from its usual folder layout.
3. ``as_dataset`` lets you bring your own arrays instead.
4. ``augment_batch`` / ``to_float`` turn stored bytes into model input.
5. ``DataLoader`` cuts a data set into shuffled batches.

``save_grid`` writes a picture of samples so you can check them by eye.

Conventions used everywhere below: images are NCHW. Stored images are uint8
(N, 3, 96, 96) with values 0..255; model input is float32 in [0, 1]. Stored
labels are int64 0/1 of shape (N,); batches carry them as float32 (B,), ready
for a binary cross-entropy. Pixel coordinates are (row, column) = (y, x) with
y pointing down, as in the arrays themselves.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np

from ..common import data_dir

__all__ = [
    "IMAGE_SIZE",
    "data_dir",
    "SyntheticVWW",
    "VisualWakeWords",
    "ArrayDataset",
    "as_dataset",
    "to_float",
    "augment_batch",
    "DataLoader",
    "save_grid",
]

IMAGE_SIZE = 96  # pixels per side of every image the model sees
_SUBSETS = ("train", "val")


# ---------------------------------------------------------------------------
# Where data lives
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Drawing primitives
#
# Every shape is drawn the same way: for each pixel in the shape's bounding
# box, the signed distance from the pixel centre to the shape's outline
# (negative inside) becomes a coverage in [0, 1], and the shape's colour is
# blended in by that coverage. Three shape kinds cover everything: capsules
# (discs, limbs, bars, lines), rotated rounded boxes (torsos, rectangles) and
# rotated ellipses. Painting is the one hot loop of data generation (about a
# dozen shapes per image, 10,000 images), so it is a Numba kernel: NumPy's
# per-call overhead on these small boxes cost ten times the arithmetic.
# ---------------------------------------------------------------------------

def _direction(angle: float) -> np.ndarray:
    """Unit vector (dy, dx) at a clock angle: 0 points up, pi/2 right, pi down."""
    return np.array([-math.cos(angle), math.sin(angle)])


class _Part(NamedTuple):
    """One shape to draw, in pixel units.

    kind: "capsule", "box" or "ellipse".
    points: (k, 2) float (y, x): a capsule's two end centres (equal for a
        disc), or the centre of a box or ellipse.
    size: capsule (radius,); box (half_length, half_width, corner_radius);
        ellipse (semi_axis_along, semi_axis_across).
    angle: clock angle (radians) of the long axis of a box or ellipse.
    colour: (3,) float32 RGB in [0, 255].
    """

    kind: str
    points: np.ndarray
    size: tuple
    angle: float
    colour: np.ndarray


def _capsule(a, b, radius, colour) -> _Part:
    return _Part("capsule", np.array([a, b], dtype=float), (float(radius),), 0.0, colour)


def _disc(centre, radius, colour) -> _Part:
    return _capsule(centre, centre, radius, colour)


def _box(centre, half_length, half_width, angle, corner, colour) -> _Part:
    corner = min(corner, half_length, half_width)
    size = (float(half_length), float(half_width), float(corner))
    return _Part("box", np.array([centre], dtype=float), size, float(angle), colour)


def _ellipse(centre, semi_along, semi_across, angle, colour) -> _Part:
    size = (float(semi_along), float(semi_across))
    return _Part("ellipse", np.array([centre], dtype=float), size, float(angle), colour)


def _moved(part: _Part, offset) -> _Part:
    return part._replace(points=part.points + np.asarray(offset, dtype=float))


def _extent(part: _Part) -> tuple[float, float, float, float]:
    """Bounding box (y_min, y_max, x_min, x_max) in pixels, slightly generous."""
    if part.kind == "capsule":
        reach = part.size[0]
    elif part.kind == "box":
        reach = math.hypot(part.size[0], part.size[1])
    else:
        reach = max(part.size)
    ys, xs = part.points[:, 0].tolist(), part.points[:, 1].tolist()
    return min(ys) - reach, max(ys) + reach, min(xs) - reach, max(xs) + reach


_CAPSULE, _BOX, _ELLIPSE = 0, 1, 2  # shape codes the painting kernel reads


def _paint_pixels(canvas, kind, geometry, colour, y0, y1, x0, x1):
    """Blend one shape into the canvas, one pixel at a time.

    canvas: (3, H, W) float32 RGB in [0, 255], changed in place.
    kind: _CAPSULE, _BOX or _ELLIPSE.
    geometry: (6,) float64, in pixels and radians:
        capsule (ay, ax, by, bx, radius, -): segment a-b grown by radius;
        box     (cy, cx, angle, half_length, half_width, corner_radius);
        ellipse (cy, cx, angle, semi_along, semi_across, -);
        angle is the clock angle of the long axis (0 up, pi/2 right).
    colour: (3,) float32 RGB.
    y0, y1, x0, x1: the pixel rows y0..y1-1 and columns x0..x1-1 to visit,
        a box around the shape already clipped to the canvas.

    For each pixel centre, d is the signed distance in pixels to the shape's
    outline (negative inside); the pixel takes the colour with weight
    coverage = clip(0.5 - d, 0, 1), a one-pixel ramp that anti-aliases edges
    so even a 2-pixel-wide limb of a small figure is not jagged.
    """
    cy, cx = geometry[0], geometry[1]
    # Shape constants, computed once rather than per pixel.
    ey, ex = geometry[2] - cy, geometry[3] - cx  # capsule: segment a -> b
    length2 = ey * ey + ex * ex
    along_y, along_x = -math.cos(geometry[2]), math.sin(geometry[2])  # long axis
    across_y, across_x = along_x, -along_y  # a quarter turn from it
    for y in range(y0, y1):
        for x in range(x0, x1):
            dy, dx = y - cy, x - cx
            if kind == _CAPSULE:
                # Closest point of the segment: t = 0 at a, 1 at b.
                t = 0.0
                if length2 > 0.0:
                    t = min(max((dy * ey + dx * ex) / length2, 0.0), 1.0)
                d = math.hypot(dy - t * ey, dx - t * ex) - geometry[4]
            else:
                u = dy * along_y + dx * along_x  # along the long axis
                v = dy * across_y + dx * across_x  # across it
                if kind == _BOX:
                    # A rounded box is a smaller sharp box grown by the corner.
                    corner = geometry[5]
                    qu = abs(u) - (geometry[3] - corner)
                    qv = abs(v) - (geometry[4] - corner)
                    outside = math.hypot(max(qu, 0.0), max(qv, 0.0))
                    d = outside + min(max(qu, qv), 0.0) - corner
                else:
                    # Ellipse: k = 1 on the outline. (k - 1) divided by the
                    # slope of k along the ray is close to a distance in
                    # pixels, so edges are one pixel soft all round.
                    a, b = geometry[3], geometry[4]
                    k = math.sqrt((u / a) ** 2 + (v / b) ** 2)
                    radial = max(math.hypot(u, v), 1e-9)
                    slope = max(k / radial, 1.0 / max(a, b))
                    d = (k - 1.0) / slope
            coverage = min(max(0.5 - d, 0.0), 1.0)
            if coverage > 0.0:
                for c in range(3):
                    canvas[c, y, x] += coverage * (colour[c] - canvas[c, y, x])


_paint_pixels_jit = numba.njit(cache=True)(_paint_pixels)


def _paint(canvas: np.ndarray, part: _Part, kernel=None) -> None:
    """Draw one part on canvas (3, 96, 96) float32 RGB in [0, 255], in place.

    kernel: the pixel painter; the jitted one unless a test passes the
    plain Python one.
    """
    y_min, y_max, x_min, x_max = _extent(part)
    height, width = canvas.shape[1], canvas.shape[2]
    y0, y1 = max(int(math.floor(y_min)) - 1, 0), min(int(math.ceil(y_max)) + 2, height)
    x0, x1 = max(int(math.floor(x_min)) - 1, 0), min(int(math.ceil(x_max)) + 2, width)
    if y0 >= y1 or x0 >= x1:
        return  # wholly outside the frame
    geometry = np.zeros(6)
    if part.kind == "capsule":
        kind = _CAPSULE
        geometry[:4] = part.points.ravel()
        geometry[4] = part.size[0]
    else:
        kind = _BOX if part.kind == "box" else _ELLIPSE
        geometry[:2] = part.points[0]
        geometry[2] = part.angle
        geometry[3:3 + len(part.size)] = part.size
    (kernel or _paint_pixels_jit)(canvas, kind, geometry, part.colour, y0, y1, x0, x1)


# ---------------------------------------------------------------------------
# Backgrounds and colours (shared by both classes, so neither carries a cue)
# ---------------------------------------------------------------------------

_ROWS = np.arange(IMAGE_SIZE, dtype=np.float32)[:, None]  # (96, 1) pixel y
_COLS = np.arange(IMAGE_SIZE, dtype=np.float32)[None, :]  # (1, 96) pixel x


def _background(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random backdrop: flat, gradient, stripes, checks or smooth blotches.

    Returns (canvas (3, 96, 96) float32 in [0, 255], colours (2, 3)): the two
    colours the backdrop mixes, which part colours must stand out from.
    """
    base = rng.uniform(0, 255, size=3)
    # The second colour is a moderate step from the first: strong enough to be
    # texture, not so strong that half the image becomes a wall of contrast.
    second = np.clip(base + rng.normal(0, 40, size=3), 0, 255)
    kind = rng.integers(5)
    if kind == 0:  # flat
        mix = np.zeros((1, 1), np.float32)
    elif kind == 1:  # linear gradient in a random direction
        dy, dx = _direction(rng.uniform(0, 2 * math.pi))
        ramp = _ROWS * dy + _COLS * dx
        mix = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    elif kind == 2:  # sinusoidal stripes
        dy, dx = _direction(rng.uniform(0, 2 * math.pi))
        period = rng.uniform(8, 40)
        phase = rng.uniform(0, 2 * math.pi)
        mix = 0.5 + 0.5 * np.sin((_ROWS * dy + _COLS * dx) * (2 * math.pi / period) + phase)
    elif kind == 3:  # checkerboard
        cell = int(rng.integers(6, 21))
        mix = (_ROWS // cell + _COLS // cell) % 2
    else:  # smooth blotches: a coarse random grid, bilinearly enlarged
        coarse = rng.random((int(rng.integers(3, 9)),) * 2)
        mix = _enlarge(coarse, IMAGE_SIZE)
    canvas = base[:, None, None] + (second - base)[:, None, None] * mix
    canvas = np.broadcast_to(canvas, (3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    return canvas, np.stack([base, second])


def _enlarge(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly enlarge a (g, g) grid to (size, size), corners aligned."""
    g = grid.shape[0]
    position = np.linspace(0, g - 1, size)
    low = np.minimum(position.astype(int), g - 2)
    frac = position - low
    rows = grid[low] * (1 - frac)[:, None] + grid[low + 1] * frac[:, None]  # (size, g)
    return rows[:, low] * (1 - frac)[None, :] + rows[:, low + 1] * frac[None, :]


def _part_colour(rng: np.random.Generator, backdrop: np.ndarray) -> np.ndarray:
    """A random RGB colour, float32 (3,) in [0, 255], that stands out from
    both backdrop colours (backdrop: (2, 3)) if it can: at least 80 apart
    in RGB and 50 apart in brightness (luma, 0.299 R + 0.587 G + 0.114 B).

    Without this a figure could vanish into its background and its label
    would be a lie; the brightness step also gives the network's first
    edge detectors something to find whatever the hues. Distractors use
    the same rule, so contrast is no cue to the label.
    """
    backdrop = backdrop.tolist()  # plain floats: NumPy is slow on 3 numbers
    best, best_gap = None, -1.0
    for _ in range(40):  # about one draw in four passes against a mid-grey backdrop
        colour = rng.uniform(0, 255, size=3).tolist()
        # The worst margin, each as a fraction of its minimum (>= 1 passes).
        gap = min(
            min(math.dist(colour, seen) / 80, abs(_luma(colour) - _luma(seen)) / 50) for seen in backdrop
        )
        if gap >= 1:
            return np.array(colour, dtype=np.float32)
        if gap > best_gap:
            best, best_gap = colour, gap
    return np.array(best, dtype=np.float32)


def _luma(rgb) -> float:
    """Brightness of an RGB colour in [0, 255] (ITU-R BT.601 weights)."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


# ---------------------------------------------------------------------------
# Figures: a person, its near-misses, and clutter made of the same parts
# ---------------------------------------------------------------------------

# The difficulty knobs of the synthetic task (change one, bump VERSION).
FIGURE_HEIGHT = (0.30, 0.90)  # figure height, fraction of the image height
NEAR_MISS_RATE = 0.30  # fraction of negatives that are near-misses, not clutter
DISTRACTORS = (0, 3)  # fewest and most distractor shapes behind the figure
DISTRACTOR_SIZE = 32  # largest distractor, pixels across
OCCLUSION_RATE = 0.25  # chance of a shape drawn over the figure
LEAVE_FRAME_RATE = 0.15  # chance, per axis, that up to 25 % of a figure is cut off (never the top)


class _BodyPlan(NamedTuple):
    """Part sizes (pixels) and colours for one figure of a given height.

    Positives and negatives both start from a plan drawn by ``_body_plan``,
    so every image has one head, one torso and four two-segment limbs of the
    same size distribution; only their arrangement differs.
    """

    head_radius: float
    torso_half_length: float
    torso_half_width: float
    arm_lengths: tuple[float, float]  # upper arm, forearm
    arm_radius: float
    leg_lengths: tuple[float, float]  # thigh, shin
    leg_radius: float
    tilt: float  # clock angle of the body's up direction (radians)
    colours: dict  # "head", "torso", "arms", "legs" -> (3,) RGB


def _body_plan(rng: np.random.Generator, backdrop: np.ndarray) -> _BodyPlan:
    """Sizes for a figure FIGURE_HEIGHT of the image tall, +-15 % jitter per part."""
    height = rng.uniform(*FIGURE_HEIGHT) * IMAGE_SIZE

    def jitter():
        return rng.uniform(0.85, 1.15)

    # One colour for the whole figure, as a silhouette; sometimes the head
    # (skin) or the legs (trousers) differ. Negatives colour their parts by
    # the same rule, so colour says nothing about the label.
    body = _part_colour(rng, backdrop)
    colours = {"torso": body, "arms": body}
    colours["head"] = _part_colour(rng, backdrop) if rng.random() < 0.3 else body
    colours["legs"] = _part_colour(rng, backdrop) if rng.random() < 0.3 else body
    # Proportions of a blocky person (fractions of the height): head 0.16,
    # neck 0.02, torso 0.33, legs 0.46 -- together about 0.97.
    return _BodyPlan(
        head_radius=0.08 * height * jitter(),
        torso_half_length=0.165 * height * jitter(),
        torso_half_width=0.09 * height * jitter(),
        arm_lengths=(0.16 * height * jitter(), 0.15 * height * jitter()),
        arm_radius=max(0.035 * height * jitter(), 1.0),
        leg_lengths=(0.23 * height * jitter(), 0.23 * height * jitter()),
        leg_radius=max(0.045 * height * jitter(), 1.1),
        tilt=math.radians(rng.uniform(-15, 15)),
        colours=colours,
    )


def _limb(root, first_angle, second_angle, lengths, radius, colour) -> list[_Part]:
    """A two-segment limb from root: (upper, lower) capsules at clock angles."""
    root = np.asarray(root, dtype=float)
    joint = root + lengths[0] * _direction(first_angle)
    end = joint + lengths[1] * _direction(second_angle)
    return [_capsule(root, joint, radius, colour), _capsule(joint, end, radius, colour)]


def _limb_specs(plan: _BodyPlan) -> list[tuple]:
    """(segment lengths, radius, colour) of the four limbs: arm, arm, leg, leg."""
    arm = (plan.arm_lengths, plan.arm_radius, plan.colours["arms"])
    leg = (plan.leg_lengths, plan.leg_radius, plan.colours["legs"])
    return [arm, arm, leg, leg]


def _torso(plan: _BodyPlan, angle: float) -> _Part:
    return _box(
        (0.0, 0.0), plan.torso_half_length, plan.torso_half_width, angle,
        0.4 * plan.torso_half_width, plan.colours["torso"],
    )


def _body_points(plan: _BodyPlan) -> dict:
    """The body's up and right unit vectors, and where shoulders and hips
    go (left, right), for a torso centred at (0, 0)."""
    up = _direction(plan.tilt)
    right = _direction(plan.tilt + math.pi / 2)
    shoulder = plan.torso_half_length - 1.2 * plan.arm_radius
    hip = plan.torso_half_length - plan.leg_radius
    return {
        "up": up,
        "right": right,
        "shoulders": [
            up * shoulder + side * right * (plan.torso_half_width - plan.arm_radius) for side in (-1, 1)
        ],
        "hips": [-up * hip + side * right * 0.5 * plan.torso_half_width for side in (-1, 1)],
    }


def _arms_and_legs(rng, plan: _BodyPlan, where: dict) -> tuple[list[_Part], list[_Part]]:
    """Limbs of a plausible pose, attached at shoulders and hips.

    A limb's angles are measured from hanging straight down, positive
    outwards: arms swing 15-165 degrees at the shoulder (by the side up to
    raised) and bend -40..100 at the elbow; legs open -8..40 degrees at the
    hip and bend -35..35 at the knee.
    """
    down = plan.tilt + math.pi
    arms, legs = [], []
    for index, side in enumerate((-1, 1)):
        swing = math.radians(rng.uniform(15, 165))
        bend = math.radians(rng.uniform(-40, 100))
        # Rotating outwards is clockwise on the right side, anticlockwise on
        # the left; the side's sign turns "outwards" into a clock angle.
        arms += _limb(
            where["shoulders"][index], down - side * swing, down - side * (swing + bend),
            plan.arm_lengths, plan.arm_radius, plan.colours["arms"],
        )
        spread = math.radians(rng.uniform(-8, 40))
        knee = math.radians(float(np.clip(rng.uniform(-35, 35), -15 - math.degrees(spread), 60)))
        legs += _limb(
            where["hips"][index], down - side * spread, down - side * (spread + knee),
            plan.leg_lengths, plan.leg_radius, plan.colours["legs"],
        )
    return arms, legs


def _head_on_top(rng, plan: _BodyPlan, where: dict) -> _Part:
    neck = plan.head_radius * rng.uniform(-0.3, 0.4)
    nod = math.radians(rng.uniform(-12, 12))
    centre = _direction(plan.tilt + nod) * (plan.torso_half_length + neck + plan.head_radius)
    return _disc(centre, plan.head_radius, plan.colours["head"])


def _person(rng, plan: _BodyPlan) -> list[_Part]:
    """A positive: head on top of an upright-ish torso, arms at the shoulders,
    legs at the hips, in a random pose. Drawn back to front: legs, torso,
    arms, head."""
    where = _body_points(plan)
    arms, legs = _arms_and_legs(rng, plan, where)
    return legs + [_torso(plan, plan.tilt)] + arms + [_head_on_top(rng, plan, where)]


def _head_misplaced(rng, plan: _BodyPlan) -> list[_Part]:
    """Near-miss: a correct body whose head sits below the torso or off to
    one side, not on the shoulders."""
    where = _body_points(plan)
    arms, legs = _arms_and_legs(rng, plan, where)
    leg_length = sum(plan.leg_lengths)
    if rng.random() < 0.5:  # between or below the legs
        drop = plan.torso_half_length + plan.head_radius + rng.uniform(0.2, 1.1) * leg_length
        centre = -where["up"] * drop + where["right"] * rng.uniform(-0.5, 0.5) * plan.torso_half_width
    else:  # floating beside the body, clear of the arms
        side = rng.choice((-1, 1))
        away = plan.torso_half_width + sum(plan.arm_lengths) + plan.head_radius * rng.uniform(1.2, 2.5)
        centre = side * where["right"] * away + where["up"] * rng.uniform(-1, 1) * plan.torso_half_length
    head = _disc(centre, plan.head_radius, plan.colours["head"])
    return legs + [_torso(plan, plan.tilt)] + arms + [head]


def _limbs_scattered(rng, plan: _BodyPlan) -> list[_Part]:
    """Near-miss: head on torso as in a person, but the four limbs lie loose
    around it, none touching the body."""
    where = _body_points(plan)
    parts = [_torso(plan, plan.tilt), _head_on_top(rng, plan, where)]
    body_reach = plan.torso_half_length + 2 * plan.head_radius
    for lengths, radius, colour in _limb_specs(plan):
        bearing = rng.uniform(0, 2 * math.pi)
        root = _direction(bearing) * (body_reach + radius + rng.uniform(0.3, 1.2) * lengths[0])
        # Point away from the body (within 60 degrees) so it never reaches back.
        first = bearing + math.radians(rng.uniform(-60, 60))
        second = first + math.radians(rng.uniform(-70, 70))
        parts += _limb(root, first, second, lengths, radius, colour)
    return parts


def _limbs_misattached(rng, plan: _BodyPlan) -> list[_Part]:
    """Near-miss: head on torso, but all four limbs grow out of the head --
    either radiating all round it like a star, or sprouting upwards from its
    crown like antlers -- and none from the shoulders or hips."""
    where = _body_points(plan)
    head = _head_on_top(rng, plan, where)
    head_centre = head.points[0]
    limbs = []
    star = rng.random() < 0.5
    start = rng.uniform(0, 2 * math.pi)
    for index, (lengths, radius, colour) in enumerate(_limb_specs(plan)):
        if star:  # a quarter turn apart, all round
            bearing = start + index * math.pi / 2 + math.radians(rng.uniform(-20, 20))
        else:  # fanned over the crown, from 60 degrees left to 60 right of up
            bearing = plan.tilt + math.radians(-60 + 40 * index + rng.uniform(-10, 10))
        root = head_centre + _direction(bearing) * plan.head_radius * 0.8
        second = bearing + math.radians(rng.uniform(-40, 40))
        limbs += _limb(root, bearing, second, lengths, radius, colour)
    return [_torso(plan, plan.tilt)] + limbs + [head]


def _table(rng, plan: _BodyPlan) -> list[_Part]:
    """Near-miss with wrong proportions: the torso lies flat, long and thin
    like a table top or an animal's back, all four limbs hang straight down
    from its underside, and the head sits at one end -- a four-legged
    thing, not a person."""
    up = _direction(plan.tilt)
    right = _direction(plan.tilt + math.pi / 2)
    # The body's bar turned on its side: long axis horizontal, and stretched
    # so four legs fit under it.
    half_length = 1.6 * plan.torso_half_length
    half_width = 0.6 * plan.torso_half_width
    top = _box(
        (0.0, 0.0), half_length, half_width, plan.tilt + math.pi / 2, 0.4 * half_width, plan.colours["torso"]
    )
    # The head at one end, raised a little, where an animal carries it.
    end = rng.choice((-1, 1)) * (half_length + 0.5 * plan.head_radius)
    head_at = up * (half_width + plan.head_radius * rng.uniform(0.0, 1.0)) + right * end
    head = _disc(head_at, plan.head_radius, plan.colours["head"])
    down = plan.tilt + math.pi
    limbs = []
    specs = _limb_specs(plan)
    rng.shuffle(specs)
    # Four roots evenly spread along the underside, nearly to the ends.
    for along, (lengths, radius, colour) in zip(np.linspace(-0.9, 0.9, 4), specs):
        root = -up * (half_width - radius) + right * along * half_length
        first = down + math.radians(rng.uniform(-12, 12))
        second = first + math.radians(rng.uniform(-15, 15))
        limbs += _limb(root, first, second, lengths, radius, colour)
    return limbs + [top, head]


def _clutter(rng, plan: _BodyPlan) -> list[_Part]:
    """A plain negative: the same head, torso and limbs thrown down at random
    positions and angles, mostly across the whole frame, sometimes (30 %) in
    a pile a little larger than the figure would be."""
    figure = 2 * (plan.head_radius + plan.torso_half_length) + sum(plan.leg_lengths)
    spread = 1.3 * figure if rng.random() < 0.3 else IMAGE_SIZE
    half = spread / 2

    def anywhere():
        return rng.uniform(-half, half, size=2)

    torso = _torso(plan, rng.uniform(0, 2 * math.pi))
    parts = [_moved(torso, anywhere())]
    specs = _limb_specs(plan)
    for lengths, radius, colour in specs:
        root, first = anywhere(), rng.uniform(0, 2 * math.pi)
        second = first + math.radians(rng.uniform(-90, 90))
        parts += _limb(root, first, second, lengths, radius, colour)
    parts.append(_disc(anywhere(), plan.head_radius, plan.colours["head"]))
    order = rng.permutation(len(parts))
    return [parts[i] for i in order]


_NEAR_MISSES = (_head_misplaced, _limbs_scattered, _limbs_misattached, _table)


def _distractor(rng, backdrop: np.ndarray, max_size: float, centre=None) -> list[_Part]:
    """One random shape (disc, ellipse, box, bar, line or bent stick), the
    same for both classes. Sizes are pixels, up to max_size across."""
    colour = _part_colour(rng, backdrop)
    if centre is None:
        centre = rng.uniform(0, IMAGE_SIZE, size=2)
    centre = np.asarray(centre, dtype=float)
    size = rng.uniform(4, max_size)
    angle = rng.uniform(0, 2 * math.pi)
    kind = rng.integers(6)
    if kind == 0:
        return [_disc(centre, size / 2, colour)]
    if kind == 1:
        return [_ellipse(centre, size / 2, size / 2 * rng.uniform(0.25, 0.8), angle, colour)]
    if kind == 2:
        half_width = size / 2 * rng.uniform(0.2, 1.0)
        return [_box(centre, size / 2, half_width, angle, rng.uniform(0, 0.5) * half_width, colour)]
    if kind == 3:  # bar
        end = _direction(angle) * size / 2
        return [_capsule(centre - end, centre + end, max(size * rng.uniform(0.05, 0.15), 0.8), colour)]
    if kind == 4:  # thin line
        end = _direction(angle) * size / 2
        return [_capsule(centre - end, centre + end, rng.uniform(0.5, 1.2), colour)]
    lengths = (size / 2, size / 2 * rng.uniform(0.6, 1.0))
    second = angle + math.radians(rng.uniform(-90, 90))
    return _limb(centre, angle, second, lengths, max(size * 0.05, 0.8), colour)


def _place(rng, parts: list[_Part], may_leave_frame: bool = True):
    """Move a figure (built around the origin) to a random spot in the frame.

    Mostly the whole figure fits. If may_leave_frame then, with probability
    LEAVE_FRAME_RATE per axis, up to 25 % of it hangs out at the bottom, or
    at the left or right -- never at the top, where the cut would take the
    head and leave a headless body, which is what some near-misses are.
    Returns the moved parts and their bounding box (y_min, y_max, x_min,
    x_max) in pixels.
    """
    extents = np.array([_extent(p) for p in parts])
    y_min, x_min = extents[:, 0].min(), extents[:, 2].min()
    y_max, x_max = extents[:, 1].max(), extents[:, 3].max()
    offset = []
    for axis, (low, high) in enumerate(((y_min, y_max), (x_min, x_max))):
        span = high - low
        if may_leave_frame and rng.random() < LEAVE_FRAME_RATE:
            overhang = rng.uniform(0, 0.25) * span
            leaves_at_start = axis == 1 and rng.random() < 0.5  # left edge; rows only leave at the bottom
            start = -overhang if leaves_at_start else IMAGE_SIZE - span + overhang
        elif span <= IMAGE_SIZE:
            start = rng.uniform(0, IMAGE_SIZE - span)
        else:  # taller than the frame: centre it, with a little play
            start = (IMAGE_SIZE - span) / 2 + rng.uniform(-0.1, 0.1) * span
        offset.append(start - low)
    dy, dx = offset
    return [_moved(p, offset) for p in parts], (y_min + dy, y_max + dy, x_min + dx, x_max + dx)


def _draw_example(rng: np.random.Generator, label: int) -> np.ndarray:
    """Draw one image: (3, 96, 96) uint8, a person iff label == 1.

    Recipe, identical for both classes except for the figure step:
    backdrop; DISTRACTORS shapes behind; the figure (a person, or for label
    0 a near-miss with probability NEAR_MISS_RATE, else clutter) placed at
    random; with probability OCCLUSION_RATE a shape over the figure; then
    pixel noise.
    """
    canvas, backdrop = _background(rng)
    for _ in range(rng.integers(DISTRACTORS[0], DISTRACTORS[1] + 1)):
        for part in _distractor(rng, backdrop, max_size=DISTRACTOR_SIZE):
            _paint(canvas, part)

    plan = _body_plan(rng, backdrop)
    near_miss = label == 0 and rng.random() < NEAR_MISS_RATE
    if label == 1:
        figure = _person(rng, plan)
    elif near_miss:
        figure = _NEAR_MISSES[rng.integers(len(_NEAR_MISSES))](rng, plan)
    else:
        figure = _clutter(rng, plan)
    # A near-miss stays whole in the frame: cropping could cut off just the
    # misplaced part and leave something a person would call a person.
    figure, (y_min, y_max, x_min, x_max) = _place(rng, figure, may_leave_frame=not near_miss)
    for part in figure:
        _paint(canvas, part)

    if rng.random() < OCCLUSION_RATE:
        # Occluder: a shape whose centre falls on the figure, at most 30 % of
        # the figure's height, so most of the figure stays visible.
        centre = (rng.uniform(y_min, y_max), rng.uniform(x_min, x_max))
        biggest = max(5.0, 0.3 * min(y_max - y_min, IMAGE_SIZE))
        for part in _distractor(rng, backdrop, max_size=biggest, centre=centre):
            _paint(canvas, part)

    # Sensor-like grain, the same in all three channels: uniform noise with a
    # standard deviation up to 6 grey levels (uniform is 4x cheaper to draw
    # than normal, and the network cannot tell the difference).
    grain = rng.random((1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32) - np.float32(0.5)
    canvas += grain * np.float32(rng.uniform(0, 6) * math.sqrt(12))
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# The synthetic data set
# ---------------------------------------------------------------------------


class SyntheticVWW:
    """A drawn stand-in for Visual Wake Words: is there a person-like figure?

    Attributes:
        images: uint8 (N, 3, 96, 96), C-contiguous, values 0..255.
        labels: int64 (N,), 1 = a person-like figure is present.

    Every image has the same ingredients: a textured or gradient backdrop,
    random distractor shapes, and one set of figure parts -- a disc, a
    rounded bar and four two-segment limbs -- of the same sizes and colour
    distributions in both classes. In a positive the parts form a person:
    head on top of the torso, arms at the shoulders, legs at the hips, a
    random pose, 30-90 % of the image tall, anywhere, sometimes cut by the
    frame's sides or bottom or under an occluder. In a negative the same parts are arranged
    wrongly: 30 % are near-misses (head below or beside the body, limbs
    lying loose, limbs growing out of the head, a four-legged "table"), the
    rest are the parts thrown down as clutter. So the label is carried by
    arrangement alone, which is what makes it a (small) vision task rather
    than a colour or size test. Every part stands out from the backdrop in
    colour and brightness, in both classes. The knobs (FIGURE_HEIGHT,
    NEAR_MISS_RATE, ...) are module constants above.

    The classes are exactly balanced for an even size (half each, shuffled).
    The images depend only on (subset, seed, size): train and val come from
    two independent random streams spawned from ``seed``, so val never
    repeats train.

    Default sizes, train 8,000 and val 2,000, and why:

    - Learning: the 0.25-width MobileNet has about 224k parameters. 8,000
      images, each seen under fresh random augmentation, are far more
      distinct inputs than it can memorise in the few epochs a lesson runs,
      and enough that every pose and near-miss kind appears hundreds of
      times, so it does not underfit for lack of examples.
    - Time: at about 150 ms per batch of 32 on a 2-core CPU, 8,000 images is
      250 steps, roughly 40 s per epoch -- short enough to retrain after each
      pruning step in class.
    - Measurement: 2,000 validation images put the standard error of an
      accuracy near 90 % at about 0.7 points, fine enough to see the few
      points a pruning step costs.
    - Memory and disk: 8,000 x 27,648 bytes is about 220 MB as uint8.

    Generated sets are cached as
    ``<cache_dir>/synthetic-vww-v{VERSION}-{subset}-seed{seed}-n{size}.npz``
    (``cache_dir`` defaults to ``data_dir() / "cache"``); a damaged cache
    file, or one whose first images this code does not draw the same way,
    is regenerated with a warning.
    """

    VERSION = 4  # bump whenever generation changes, so old caches are not reused
    DEFAULT_SIZES = {"train": 8000, "val": 2000}

    def __init__(self, subset: str = "train", seed: int = 0, size: int | None = None, cache_dir=None):
        if subset not in _SUBSETS:
            raise ValueError(f"subset must be 'train' or 'val', got {subset!r}")
        if size is None:
            size = self.DEFAULT_SIZES[subset]
        if int(size) != size or size < 1:
            raise ValueError(f"size must be a positive whole number of images, got {size!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.subset, self.seed, self.size = subset, int(seed), int(size)
        folder = Path(cache_dir) if cache_dir is not None else data_dir() / "cache"
        name = f"synthetic-vww-v{self.VERSION}-{subset}-seed{self.seed}-n{self.size}.npz"
        self.cache_path = folder / name
        self.images, self.labels = self._load_or_generate()

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"SyntheticVWW(subset={self.subset!r}, seed={self.seed}, size={self.size})"

    @staticmethod
    def generate(subset: str, seed: int, size: int, first: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw a set without touching the cache.

        Returns (images uint8 (size, 3, 96, 96), labels int64 (size,)), with
        exactly size // 2 labels equal to 1, in a random order.  With
        ``first``, only the first ``first`` images are drawn (the labels are
        all there): enough to check that a cached set came from this code.
        """
        stream = _SUBSETS.index(subset)
        # spawn_key gives train and val independent child streams of one seed.
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))
        labels = np.zeros(size, dtype=np.int64)
        labels[: size // 2] = 1
        labels = rng.permutation(labels)
        count = size if first is None else min(first, size)
        images = np.empty((count, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        for i in range(count):
            images[i] = _draw_example(rng, int(labels[i]))
        return images, labels

    def _load_or_generate(self) -> tuple[np.ndarray, np.ndarray]:
        if self.cache_path.is_file():
            try:
                images, labels = self._load(self.cache_path)
                # A cache written by other drawing code (changed without a VERSION
                # bump) would silently be another data set: redraw two images and
                # compare, a few milliseconds.
                fresh, fresh_labels = self.generate(self.subset, self.seed, self.size, first=2)
                if np.array_equal(labels, fresh_labels) and np.array_equal(images[:2], fresh):
                    return images, labels
                warnings.warn(f"regenerating {self.cache_path}: it was drawn by a different version of "
                              "the generator", stacklevel=3)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
                warnings.warn(f"regenerating damaged cache file {self.cache_path}: {error}", stacklevel=3)
        images, labels = self.generate(self.subset, self.seed, self.size)
        try:
            _write_atomically(self.cache_path, lambda file: np.savez(file, images=images, labels=labels))
        except OSError as error:  # a read-only disk should not stop a lesson
            warnings.warn(f"could not cache {self.cache_path}: {error}", stacklevel=3)
        return images, labels

    def _load(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        with np.load(path, allow_pickle=False) as stored:
            images, labels = stored["images"], stored["labels"]
        want = (self.size, 3, IMAGE_SIZE, IMAGE_SIZE)
        if images.shape != want or images.dtype != np.uint8:
            raise ValueError(f"images are {images.dtype} {images.shape}, expected uint8 {want}")
        if labels.shape != (self.size,) or labels.dtype != np.int64:
            raise ValueError(f"labels are {labels.dtype} {labels.shape}, expected int64 ({self.size},)")
        return np.ascontiguousarray(images), labels


def _write_atomically(path: Path, write) -> None:
    """Call write(file) on a temporary file beside path, then rename it to
    path, so a reader sees the old file or the whole new one, never half
    (a rename within one folder is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
        os.chmod(handle.name, 0o644)  # temporary files are private; this one is shared
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------
# The real Visual Wake Words layout
# ---------------------------------------------------------------------------


class VisualWakeWords:
    """Visual Wake Words read from disk, in the layout the course uses::

        <root>/train.txt   lines "<file name> <label>", label 0 or 1
        <root>/val.txt
        <root>/train/<file name>
        <root>/val/<file name>

    Blank lines in the lists are ignored. Every image is read with Pillow,
    converted to RGB and, if it is not already 96 x 96, resized bilinearly.

    Attributes:
        images: uint8 (N, 3, 96, 96), values 0..255, in list order.
        labels: int64 (N,), 1 = person.

    Raises FileNotFoundError for a missing list file or image, ValueError for
    a malformed list line, a label other than 0/1, or an image Pillow cannot
    read; messages name the file and, for list problems, the line number.
    Everything is loaded into memory: 27,648 bytes per image.
    """

    def __init__(self, root, subset: str = "train"):
        if subset not in _SUBSETS:
            raise ValueError(f"subset must be 'train' or 'val', got {subset!r}")
        self.root, self.subset = Path(root), subset
        list_path = self.root / f"{subset}.txt"
        if not list_path.is_file():
            raise FileNotFoundError(f"Visual Wake Words list file {list_path} not found")
        entries = _read_image_list(list_path)
        self.images = np.empty((len(entries), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        self.labels = np.array([label for _, _, label in entries], dtype=np.int64)
        for i, (line_number, name, _) in enumerate(entries):
            where = f"listed in {list_path}, line {line_number}"
            self.images[i] = _read_image(self.root / subset / name, where)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"VisualWakeWords({str(self.root)!r}, subset={self.subset!r})"


def _read_image_list(list_path: Path) -> list[tuple[int, str, int]]:
    """Parse "<file name> <label>" lines into (line number, name, label)."""
    entries = []
    for line_number, line in enumerate(list_path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(
                f"{list_path}, line {line_number}: expected '<file name> <label>', got {line.strip()!r}"
            )
        name, label = fields
        if label not in ("0", "1"):
            raise ValueError(f"{list_path}, line {line_number}: label must be 0 or 1, got {label!r}")
        entries.append((line_number, name, int(label)))
    return entries


def _read_image(path: Path, where: str) -> np.ndarray:
    """One image file as uint8 (3, 96, 96) RGB."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image {path} ({where}) not found")
    try:
        with Image.open(path) as picture:
            picture = picture.convert("RGB")
            if picture.size != (IMAGE_SIZE, IMAGE_SIZE):
                picture = picture.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            pixels = np.asarray(picture, dtype=np.uint8)  # (H, W, 3)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path} ({where}): {error}") from error
    return pixels.transpose(2, 0, 1)


# ---------------------------------------------------------------------------
# Your own arrays
# ---------------------------------------------------------------------------


class ArrayDataset:
    """Arrays you already have, checked and wrapped as a data set.

    images: (N, C, H, W), uint8 in [0, 255] or float in [0, 1].
    labels: (N,) of 0/1 (any numeric or bool dtype); stored as int64.
    """

    def __init__(self, images, labels):
        self.images, self.labels = _checked_arrays(images, labels)

    def __len__(self) -> int:
        return len(self.labels)


def as_dataset(data):
    """Accept a data set object or an ``(images, labels)`` pair.

    A data set object is anything with ``.images`` and ``.labels``; it is
    checked and returned as it is. A pair is checked and wrapped in an
    ``ArrayDataset``. Raises ValueError naming what is wrong (rank, count,
    dtype, range, label values), TypeError for anything else.
    """
    if hasattr(data, "images") and hasattr(data, "labels"):
        _checked_arrays(data.images, data.labels)
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return ArrayDataset(*data)
    raise TypeError(
        f"expected a data set with .images and .labels or an (images, labels) pair, got {type(data).__name__}"
    )


def _checked_arrays(images, labels) -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"images must have rank 4, N x C x H x W; got shape {images.shape}")
    if images.dtype == np.uint8:
        pass
    elif np.issubdtype(images.dtype, np.floating):
        if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
            raise ValueError(
                f"float images must lie in [0, 1]; got values from {images.min()} to {images.max()}"
            )
    else:
        raise ValueError(f"images must be uint8 in [0, 255] or float in [0, 1]; got dtype {images.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,); got shape {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        raise ValueError(f"labels must be numbers 0 or 1; got dtype {labels.dtype}")
    bad = np.unique(labels[(labels != 0) & (labels != 1)])
    if bad.size:
        raise ValueError(f"labels must be 0 or 1; found {bad[:5].tolist()}")
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------------------
# From bytes to model input: scaling and augmentation
# ---------------------------------------------------------------------------


def to_float(images: np.ndarray) -> np.ndarray:
    """The validation transform: uint8 (N, C, H, W) -> float32 in [0, 1].

    Float input is taken to be in [0, 1] already and only cast to float32.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1 / 255)
    return images.astype(np.float32, copy=False)


def _warp_bilinear(images, matrices, scale, out):
    """Resample each image through its own affine map, bilinearly.

    images: (N, C, H, W) uint8 or float, the source pixels.
    matrices: (N, 2, 3) float64; output pixel (i, j) reads the source at
        row = m[0, 0] * i + m[0, 1] * j + m[0, 2],
        col = m[1, 0] * i + m[1, 1] * j + m[1, 2].
    scale: number each sample is multiplied by (1/255 turns bytes into [0, 1]).
    out: (N, C, Ho, Wo) float32, written in place.

    Source positions outside the image are clamped to the nearest edge
    pixel, so a rotated or shifted image is padded by repeating its border
    (no black corners for the network to learn from).
    """
    n_images, n_channels, height, width = images.shape
    out_height, out_width = out.shape[2], out.shape[3]
    for n in range(n_images):
        m = matrices[n]
        for i in range(out_height):
            for j in range(out_width):
                row = m[0, 0] * i + m[0, 1] * j + m[0, 2]
                col = m[1, 0] * i + m[1, 1] * j + m[1, 2]
                row = min(max(row, 0.0), height - 1.0)
                col = min(max(col, 0.0), width - 1.0)
                top, left = int(row), int(col)  # floor, since both are >= 0
                bottom, right = min(top + 1, height - 1), min(left + 1, width - 1)
                fy, fx = row - top, col - left
                for c in range(n_channels):
                    upper = images[n, c, top, left] * (1.0 - fx) + images[n, c, top, right] * fx
                    lower = images[n, c, bottom, left] * (1.0 - fx) + images[n, c, bottom, right] * fx
                    out[n, c, i, j] = scale * (upper * (1.0 - fy) + lower * fy)


_warp_bilinear_jit = numba.njit(cache=True)(_warp_bilinear)


def _augment_matrices(in_shape, out_shape, angles, shifts, zooms, flips) -> np.ndarray:
    """The inverse affine maps for a batch: output pixel -> source pixel.

    in_shape, out_shape: (H, W) of source and output. For each image n:
    angles[n] rotation in radians (positive turns the picture anticlockwise
    on screen), shifts[n] = (dy, dx) translation in pixels, zooms[n]
    magnification (> 1 enlarges), flips[n] True to mirror left-right.

    Forward, the picture is flipped, rotated and zoomed about its centre,
    then shifted, then the output window is cut around the centre:
        p_out = c_out + shift + zoom * R(angle) F (p_in - c_in).
    Sampling needs the inverse, p_in = c_in + A (p_out - c_out - shift) with
    A = F R(-angle) / zoom (F, the mirror, is its own inverse).
    Returns (N, 2, 3) float64 as _warp_bilinear reads them.
    """
    c_in = (np.asarray(in_shape, dtype=float) - 1) / 2
    c_out = (np.asarray(out_shape, dtype=float) - 1) / 2
    cos, sin = np.cos(angles), np.sin(angles)
    mirror = np.where(flips, -1.0, 1.0)
    # R(-angle) in (row, col) coordinates, then the mirror negates the column.
    a = np.empty((len(angles), 2, 2))
    a[:, 0, 0], a[:, 0, 1] = cos, sin
    a[:, 1, 0], a[:, 1, 1] = -sin * mirror, cos * mirror
    a /= np.asarray(zooms, dtype=float)[:, None, None]
    origin = c_out + np.asarray(shifts, dtype=float)  # (N, 2)
    matrices = np.empty((len(angles), 2, 3))
    matrices[:, :, :2] = a
    matrices[:, :, 2] = c_in - np.einsum("nij,nj->ni", a, origin)
    return matrices


def _augment_with(images, angles, shifts, zooms, flips, out_size=IMAGE_SIZE, kernel=None) -> np.ndarray:
    """augment_batch with the random draws given explicitly (see there).

    Returns float32 (N, C, out_size, out_size) in [0, 1]. ``kernel`` picks
    the resampler (default: the jitted one); tests pass the plain one.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W; got shape {images.shape}")
    n, channels, height, width = images.shape
    matrices = _augment_matrices((height, width), (out_size, out_size), angles, shifts, zooms, flips)
    out = np.empty((n, channels, out_size, out_size), dtype=np.float32)
    scale = 1 / 255 if images.dtype == np.uint8 else 1.0
    (kernel or _warp_bilinear_jit)(np.ascontiguousarray(images), matrices, scale, out)
    return out


def augment_batch(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The training transform: random geometry per image, then scaling.

    images: (N, C, H, W) uint8 (or float in [0, 1]).
    Per image, independently: rotation uniform in +-10 degrees, translation
    uniform in +-5 % of the height / width per axis, zoom uniform in
    0.9-1.1, left-right mirror with probability 1/2; then the central 96 x 96
    window. All four are combined into one affine map and sampled once,
    bilinearly, with edge pixels repeated outside the frame.
    Returns float32 (N, C, 96, 96) in [0, 1]; the same Generator state
    gives the same result.
    """
    images = np.asarray(images)
    n, _, height, width = images.shape
    angles = np.radians(rng.uniform(-10, 10, size=n))
    shifts = rng.uniform(-0.05, 0.05, size=(n, 2)) * np.array([height, width])
    zooms = rng.uniform(0.9, 1.1, size=n)
    flips = rng.random(n) < 0.5
    return _augment_with(images, angles, shifts, zooms, flips)


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------


class DataLoader:
    """Iterate over a data set in batches of model input.

    Each iteration is one epoch and yields ``(x, y)``: x float32
    (B, C, H, W) in [0, 1] (the stored size, or 96 x 96 when augmenting),
    y float32 (B,) of 0/1. Iteration k (counting from 0; ``loader.epoch``
    is the next one and may be set to resume) uses a fresh permutation and
    augmentation stream drawn from (seed, k), so two epochs differ while the
    whole sequence repeats for the same seed.

    data: anything ``as_dataset`` accepts.
    shuffle: False keeps the stored order.
    drop_last: drop a final batch smaller than batch_size.
    augment: True applies ``augment_batch``, else ``to_float``.
    """

    def __init__(self, data, batch_size: int = 32, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, augment: bool = False):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.data = as_dataset(data)
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, seed
        self.drop_last, self.augment = drop_last, augment
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.data.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        # Two independent streams per epoch: the order, and the augmentation.
        order_seed, augment_seed = np.random.SeedSequence([self.seed, epoch]).spawn(2)
        n = len(self.data.labels)
        order = np.random.default_rng(order_seed).permutation(n) if self.shuffle else np.arange(n)
        return self._batches(order, np.random.default_rng(augment_seed))

    def _batches(self, order, rng):
        images, labels = self.data.images, np.asarray(self.data.labels)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            chosen = order[start:start + self.batch_size]
            x = augment_batch(images[chosen], rng) if self.augment else to_float(images[chosen])
            yield x, labels[chosen].astype(np.float32)


# ---------------------------------------------------------------------------
# Looking at the data
# ---------------------------------------------------------------------------


def save_grid(images, path, nrow: int = 8, labels=None) -> Path:
    """Write a PNG of images in a grid, nrow images per row.

    images: (N, C, H, W), uint8 or float in [0, 1]; C is 3 (RGB) or 1 (grey).
    labels: optional (N,); 0/1 are titled "no person" / "person", other
    values (scores, names) printed as they are. The file is written under a temporary name
    and renamed, so a reader never sees half a picture. Returns the path.

    Uses matplotlib's Figure class directly, never pyplot, so it runs without
    a display and leaves the user's chosen backend alone.
    """
    from matplotlib.figure import Figure

    pictures = to_float(images)
    count = len(pictures)
    rows = max(1, -(-count // nrow))
    figure = Figure(figsize=(1.25 * nrow, 1.45 * rows), dpi=100)
    axes = figure.subplots(rows, nrow, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= count:
            continue
        picture = pictures[k].transpose(1, 2, 0)  # CHW -> HWC for imshow
        if picture.shape[2] == 1:
            ax.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(np.clip(picture, 0, 1), interpolation="nearest")
        if labels is not None:
            ax.set_title(_label_title(labels[k]), fontsize=8)
    figure.tight_layout(pad=0.3)
    path = Path(path)
    _write_atomically(path, lambda file: figure.savefig(file, format="png"))
    return path


def _label_title(label) -> str:
    """"person" / "no person" for 1 / 0; anything else (a score, a name) as is."""
    if isinstance(label, (int, np.integer, float, np.floating)) and label in (0, 1):
        return "person" if label == 1 else "no person"
    return str(label)
