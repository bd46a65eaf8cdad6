"""The three shapes every synthetic picture is made of, and the kernel that paints them.

Every shape is drawn the same way: for each pixel in the shape's bounding
box, the signed distance from the pixel centre to the shape's outline
(negative inside) becomes a coverage in [0, 1], and the shape's colour is
blended in by that coverage.  Three kinds of shape cover everything:

* capsules: a segment grown by a radius (discs, limbs, bars, lines);
* rotated rounded boxes (torsos, rectangles);
* rotated ellipses.

Painting is the one hot loop of drawing a data set (about a dozen shapes
per image, thousands of images), so it is written twice, as the kernels in
``tinyprune/kernels.py`` are: ``_paint_pixels`` to read and step through,
``paint_pixels`` the same function compiled by Numba to run.  Each shape
covers a small box of pixels, so with whole-array NumPy operations the cost
of each call would outweigh the arithmetic it does; a compiled loop over the
pixels has no such cost.

Coordinates are pixels, (row, column) = (y, x) with y pointing down, as in
the arrays themselves.  Angles are clock angles in radians: 0 points up,
pi/2 right, pi down.
"""

import math
from collections import namedtuple

import numba
import numpy as np

Part = namedtuple("Part", "kind points size angle colour")
Part.__doc__ = """One shape to draw, in pixel units.

kind: "capsule", "box" or "ellipse".
points: (k, 2) float (y, x): a capsule's two end centres (equal for a
    disc), or the centre of a box or ellipse.
size: capsule (radius,); box (half_length, half_width, corner_radius);
    ellipse (semi_axis_along, semi_axis_across).
angle: clock angle of the long axis of a box or ellipse.
colour: (3,) float32 RGB in [0, 255]."""


def direction(angle):
    """Unit vector (dy, dx) at a clock angle: 0 points up, pi/2 right, pi down."""
    return np.array([-math.cos(angle), math.sin(angle)])


def capsule(a, b, radius, colour):
    """The segment from a to b (each (y, x)) grown by radius."""
    return Part("capsule", np.array([a, b], dtype=float), (float(radius),), 0.0, colour)


def disc(centre, radius, colour):
    """A capsule whose two ends coincide."""
    return capsule(centre, centre, radius, colour)


def box(centre, half_length, half_width, angle, corner, colour):
    """A box with its long axis at a clock angle and corners rounded by ``corner``."""
    corner = min(corner, half_length, half_width)
    size = (float(half_length), float(half_width), float(corner))
    return Part("box", np.array([centre], dtype=float), size, float(angle), colour)


def ellipse(centre, semi_along, semi_across, angle, colour):
    """An ellipse with its ``semi_along`` axis at a clock angle."""
    size = (float(semi_along), float(semi_across))
    return Part("ellipse", np.array([centre], dtype=float), size, float(angle), colour)


def moved(part, offset):
    """The same part shifted by offset (dy, dx)."""
    return part._replace(points=part.points + np.asarray(offset, dtype=float))


def extent(part):
    """Bounding box (y_min, y_max, x_min, x_max) in pixels, slightly generous."""
    if part.kind == "capsule":
        reach = part.size[0]
    elif part.kind == "box":
        reach = math.hypot(part.size[0], part.size[1])
    else:
        reach = max(part.size)
    ys, xs = part.points[:, 0].tolist(), part.points[:, 1].tolist()
    return min(ys) - reach, max(ys) + reach, min(xs) - reach, max(xs) + reach


# ---------------------------------------------------------------------------
# The painting kernel
# ---------------------------------------------------------------------------

_CAPSULE, _BOX, _ELLIPSE = 0, 1, 2  # shape codes the kernel reads


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


paint_pixels = numba.njit(cache=True)(_paint_pixels)


def paint(canvas, part, kernel=paint_pixels):
    """Draw one part on canvas (3, H, W) float32 RGB in [0, 255], in place.

    Works out the pixels the part may cover, clipped to the canvas, and the
    kernel's numeric description of the part, then hands both to ``kernel``:
    the compiled ``paint_pixels`` unless a test passes the plain
    ``_paint_pixels``.
    """
    y_min, y_max, x_min, x_max = extent(part)
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
    kernel(canvas, kind, geometry, part.colour, y0, y1, x0, x1)
