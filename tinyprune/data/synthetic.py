"""The scene generator behind ``SyntheticVWW``: people, near-misses and clutter.

The machines this course runs on have no internet, so the real Visual Wake
Words cannot be downloaded; this module draws a stand-in.  Every picture is
made of the same ingredients: a textured or gradient backdrop, a few random
distractor shapes, and one set of figure parts -- a head (disc), a torso
(rounded box) and four two-segment limbs -- of the same size and colour
distributions in both classes.  In a positive (label 1) the parts form a
person; in a negative (label 0) the same parts are arranged wrongly, as a
near-miss or as clutter.  So the label is carried by arrangement alone,
which makes it a (small) vision task rather than a colour or size test.

Reading order: backdrops and colours; the body plan and the figures built
from it; distractors and placement; ``draw_example``, the recipe of one
picture.  The shapes themselves and their painting kernel are in
``shapes.py``.

Images are (3, 96, 96) RGB, NCHW without the N; while drawing they are
float32 in [0, 255], and ``draw_example`` returns them as uint8.
"""

import math
from collections import namedtuple

import numpy as np

from ..common import check_int
from .shapes import box, capsule, direction, disc, ellipse, extent, moved, paint

__all__ = ["IMAGE_SIZE", "draw_example"]

IMAGE_SIZE = 96  # pixels per side of every image the model sees, drawn or read from disk


# ---------------------------------------------------------------------------
# Backgrounds and colours (shared by both classes, so neither carries a cue)
# ---------------------------------------------------------------------------

_ROWS = np.arange(IMAGE_SIZE, dtype=np.float32)[:, None]  # (96, 1) pixel y
_COLS = np.arange(IMAGE_SIZE, dtype=np.float32)[None, :]  # (1, 96) pixel x


def _background(rng):
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
        dy, dx = direction(rng.uniform(0, 2 * math.pi))
        ramp = _ROWS * dy + _COLS * dx
        mix = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    elif kind == 2:  # sinusoidal stripes
        dy, dx = direction(rng.uniform(0, 2 * math.pi))
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


def _enlarge(grid, size):
    """Bilinearly enlarge a (g, g) grid to (size, size), corners aligned."""
    g = grid.shape[0]
    position = np.linspace(0, g - 1, size)
    low = np.minimum(position.astype(int), g - 2)
    frac = position - low
    rows = grid[low] * (1 - frac)[:, None] + grid[low + 1] * frac[:, None]  # (size, g)
    return rows[:, low] * (1 - frac)[None, :] + rows[:, low + 1] * frac[None, :]


def _part_colour(rng, backdrop):
    """A random RGB colour, float32 (3,) in [0, 255], that stands out from
    both backdrop colours (backdrop: (2, 3)) if it can: at least 80 apart
    in RGB and 50 apart in brightness (luma, 0.299 R + 0.587 G + 0.114 B).

    Without this a figure could vanish into its background and its label
    would be a lie; the brightness step also gives the network's first
    edge detectors something to find whatever the hues. Distractors use
    the same rule, so contrast is no cue to the label.
    """
    backdrop = backdrop.tolist()  # plain floats: on three numbers, NumPy costs more per call than the work
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


def _luma(rgb):
    """Brightness of an RGB colour in [0, 255] (ITU-R BT.601 weights)."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


# ---------------------------------------------------------------------------
# Figures: a person, its near-misses, and clutter made of the same parts
# ---------------------------------------------------------------------------

# The difficulty knobs of the synthetic task (change one, bump SyntheticVWW.VERSION
# in datasets.py, so that caches drawn before the change are not reused).
FIGURE_HEIGHT = (0.30, 0.90)  # figure height, fraction of the image height
NEAR_MISS_RATE = 0.30  # fraction of negatives that are near-misses, not clutter
DISTRACTORS = (0, 3)  # fewest and most distractor shapes behind the figure
DISTRACTOR_SIZE = 32  # largest distractor, pixels across
OCCLUSION_RATE = 0.25  # chance of a shape drawn over the figure
LEAVE_FRAME_RATE = 0.15  # chance, per axis, that up to 25 % of a figure is cut off (never the top)


_BodyPlan = namedtuple("_BodyPlan", "head_radius torso_half_length torso_half_width arm_lengths "
                                    "arm_radius leg_lengths leg_radius tilt colours")
_BodyPlan.__doc__ = """Part sizes (pixels) and colours for one figure of a given height.

head_radius, torso_half_length, torso_half_width: the head disc and torso box;
arm_lengths: (upper arm, forearm), arm_radius: their thickness;
leg_lengths: (thigh, shin), leg_radius: their thickness;
tilt: clock angle of the body's up direction (radians);
colours: {"head", "torso", "arms", "legs"} -> (3,) RGB.

Positives and negatives both start from a plan drawn by ``_body_plan``, so
every image has one head, one torso and four two-segment limbs of the same
size distribution; only their arrangement differs."""


def _body_plan(rng, backdrop):
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


def _limb(root, first_angle, second_angle, lengths, radius, colour):
    """A two-segment limb from root: (upper, lower) capsules at clock angles."""
    root = np.asarray(root, dtype=float)
    joint = root + lengths[0] * direction(first_angle)
    end = joint + lengths[1] * direction(second_angle)
    return [capsule(root, joint, radius, colour), capsule(joint, end, radius, colour)]


def _limb_specs(plan):
    """(segment lengths, radius, colour) of the four limbs: arm, arm, leg, leg."""
    arm = (plan.arm_lengths, plan.arm_radius, plan.colours["arms"])
    leg = (plan.leg_lengths, plan.leg_radius, plan.colours["legs"])
    return [arm, arm, leg, leg]


def _torso(plan, angle):
    return box(
        (0.0, 0.0), plan.torso_half_length, plan.torso_half_width, angle,
        0.4 * plan.torso_half_width, plan.colours["torso"],
    )


def _body_points(plan):
    """The body's up and right unit vectors, and where shoulders and hips
    go (left, right), for a torso centred at (0, 0)."""
    up = direction(plan.tilt)
    right = direction(plan.tilt + math.pi / 2)
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


def _arms_and_legs(rng, plan, where):
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


def _head_on_top(rng, plan, where):
    neck = plan.head_radius * rng.uniform(-0.3, 0.4)
    nod = math.radians(rng.uniform(-12, 12))
    centre = direction(plan.tilt + nod) * (plan.torso_half_length + neck + plan.head_radius)
    return disc(centre, plan.head_radius, plan.colours["head"])


def _person(rng, plan):
    """A positive: head on top of an upright-ish torso, arms at the shoulders,
    legs at the hips, in a random pose. Drawn back to front: legs, torso,
    arms, head."""
    where = _body_points(plan)
    arms, legs = _arms_and_legs(rng, plan, where)
    return legs + [_torso(plan, plan.tilt)] + arms + [_head_on_top(rng, plan, where)]


def _head_misplaced(rng, plan):
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
    head = disc(centre, plan.head_radius, plan.colours["head"])
    return legs + [_torso(plan, plan.tilt)] + arms + [head]


def _limbs_scattered(rng, plan):
    """Near-miss: head on torso as in a person, but the four limbs lie loose
    around it, none touching the body."""
    where = _body_points(plan)
    parts = [_torso(plan, plan.tilt), _head_on_top(rng, plan, where)]
    body_reach = plan.torso_half_length + 2 * plan.head_radius
    for lengths, radius, colour in _limb_specs(plan):
        bearing = rng.uniform(0, 2 * math.pi)
        root = direction(bearing) * (body_reach + radius + rng.uniform(0.3, 1.2) * lengths[0])
        # Point away from the body (within 60 degrees) so it never reaches back.
        first = bearing + math.radians(rng.uniform(-60, 60))
        second = first + math.radians(rng.uniform(-70, 70))
        parts += _limb(root, first, second, lengths, radius, colour)
    return parts


def _limbs_misattached(rng, plan):
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
        root = head_centre + direction(bearing) * plan.head_radius * 0.8
        second = bearing + math.radians(rng.uniform(-40, 40))
        limbs += _limb(root, bearing, second, lengths, radius, colour)
    return [_torso(plan, plan.tilt)] + limbs + [head]


def _table(rng, plan):
    """Near-miss with wrong proportions: the torso lies flat, long and thin
    like a table top or an animal's back, all four limbs hang straight down
    from its underside, and the head sits at one end -- a four-legged
    thing, not a person."""
    up = direction(plan.tilt)
    right = direction(plan.tilt + math.pi / 2)
    # The body's bar turned on its side: long axis horizontal, and stretched
    # so four legs fit under it.
    half_length = 1.6 * plan.torso_half_length
    half_width = 0.6 * plan.torso_half_width
    top = box(
        (0.0, 0.0), half_length, half_width, plan.tilt + math.pi / 2, 0.4 * half_width, plan.colours["torso"]
    )
    # The head at one end, raised a little, where an animal carries it.
    end = rng.choice((-1, 1)) * (half_length + 0.5 * plan.head_radius)
    head_at = up * (half_width + plan.head_radius * rng.uniform(0.0, 1.0)) + right * end
    head = disc(head_at, plan.head_radius, plan.colours["head"])
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


def _clutter(rng, plan):
    """A plain negative: the same head, torso and limbs thrown down at random
    positions and angles, mostly across the whole frame, sometimes (30 %) in
    a pile a little larger than the figure would be."""
    figure = 2 * (plan.head_radius + plan.torso_half_length) + sum(plan.leg_lengths)
    spread = 1.3 * figure if rng.random() < 0.3 else IMAGE_SIZE
    half = spread / 2

    def anywhere():
        return rng.uniform(-half, half, size=2)

    torso = _torso(plan, rng.uniform(0, 2 * math.pi))
    parts = [moved(torso, anywhere())]
    specs = _limb_specs(plan)
    for lengths, radius, colour in specs:
        root, first = anywhere(), rng.uniform(0, 2 * math.pi)
        second = first + math.radians(rng.uniform(-90, 90))
        parts += _limb(root, first, second, lengths, radius, colour)
    parts.append(disc(anywhere(), plan.head_radius, plan.colours["head"]))
    order = rng.permutation(len(parts))
    return [parts[i] for i in order]


_NEAR_MISSES = (_head_misplaced, _limbs_scattered, _limbs_misattached, _table)


def _distractor(rng, backdrop, max_size, centre=None):
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
        return [disc(centre, size / 2, colour)]
    if kind == 1:
        return [ellipse(centre, size / 2, size / 2 * rng.uniform(0.25, 0.8), angle, colour)]
    if kind == 2:
        half_width = size / 2 * rng.uniform(0.2, 1.0)
        return [box(centre, size / 2, half_width, angle, rng.uniform(0, 0.5) * half_width, colour)]
    if kind == 3:  # bar
        end = direction(angle) * size / 2
        return [capsule(centre - end, centre + end, max(size * rng.uniform(0.05, 0.15), 0.8), colour)]
    if kind == 4:  # thin line
        end = direction(angle) * size / 2
        return [capsule(centre - end, centre + end, rng.uniform(0.5, 1.2), colour)]
    lengths = (size / 2, size / 2 * rng.uniform(0.6, 1.0))
    second = angle + math.radians(rng.uniform(-90, 90))
    return _limb(centre, angle, second, lengths, max(size * 0.05, 0.8), colour)


def _place(rng, parts, may_leave_frame=True):
    """Move a figure (built around the origin) to a random spot in the frame.

    Mostly the whole figure fits. If may_leave_frame then, with probability
    LEAVE_FRAME_RATE per axis, up to 25 % of it hangs out at the bottom, or
    at the left or right -- never at the top, where the cut would take the
    head and leave a headless body, which is what some near-misses are.
    Returns the moved parts and their bounding box (y_min, y_max, x_min,
    x_max) in pixels.
    """
    extents = np.array([extent(p) for p in parts])
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
    return [moved(p, offset) for p in parts], (y_min + dy, y_max + dy, x_min + dx, x_max + dx)


def draw_example(rng, label):
    """Draw one image: (3, 96, 96) uint8, a person iff label == 1.

    Recipe, identical for both classes except for the figure step:
    backdrop; DISTRACTORS shapes behind; the figure (a person, or for label
    0 a near-miss with probability NEAR_MISS_RATE, else clutter) placed at
    random; with probability OCCLUSION_RATE a shape over the figure; then
    pixel noise.
    """
    if check_int(label, "label", "draw_example", minimum=0) > 1:
        raise ValueError(f"draw_example: label must be 0 or 1, got {label!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"draw_example: rng must be a numpy Generator, got {type(rng).__name__}")
    canvas, backdrop = _background(rng)
    for _ in range(rng.integers(DISTRACTORS[0], DISTRACTORS[1] + 1)):
        for part in _distractor(rng, backdrop, max_size=DISTRACTOR_SIZE):
            paint(canvas, part)

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
        paint(canvas, part)

    if rng.random() < OCCLUSION_RATE:
        # Occluder: a shape whose centre falls on the figure, at most 30 % of
        # the figure's height, so most of the figure stays visible.
        centre = (rng.uniform(y_min, y_max), rng.uniform(x_min, x_max))
        biggest = max(5.0, 0.3 * min(y_max - y_min, IMAGE_SIZE))
        for part in _distractor(rng, backdrop, max_size=biggest, centre=centre):
            paint(canvas, part)

    # Sensor-like grain, the same in all three channels: uniform noise with a
    # standard deviation up to 6 grey levels (uniform rather than normal
    # because it is cheaper to draw, and the network cannot tell the two apart).
    grain = rng.random((1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32) - np.float32(0.5)
    canvas += grain * np.float32(rng.uniform(0, 6) * math.sqrt(12))
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
