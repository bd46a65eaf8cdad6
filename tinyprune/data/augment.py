"""The training transform: a random rotation, shift, zoom and mirror per image.

``augment_batch`` draws the four per image, combines them into one affine
map (``_augment_matrices``) and samples every image through its map once,
bilinearly.  Sampling is a loop over every output pixel of every image, so
it is written twice, as the kernels in ``tinyprune/kernels.py`` are:
``_warp_bilinear`` to read and step through, ``warp_bilinear`` the same
function compiled by Numba to run.

Images are NCHW; the result is float32 in [0, 1], as ``to_float`` gives for
validation.  Pixel coordinates are (row, column) with rows pointing down.
"""

import numba
import numpy as np

from .datasets import as_pixels
from .synthetic import IMAGE_SIZE

__all__ = ["augment_batch"]


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


warp_bilinear = numba.njit(cache=True)(_warp_bilinear)


def _augment_matrices(in_shape, out_shape, angles, shifts, zooms, flips):
    """The inverse affine maps of a batch, output pixel -> source pixel, as ``_warp_bilinear`` reads them.

    in_shape, out_shape: (H, W) of the source images and of the output.
    For each image n of N:
        angles[n]  rotation in radians; positive turns the picture
                   anticlockwise on screen;
        shifts[n]  (dy, dx) translation in output pixels, + = down, right;
        zooms[n]   magnification, > 1 enlarges the picture;
        flips[n]   True to mirror the picture left-right.
    Returns (N, 2, 3) float64: image n's output pixel (i, j) samples the
    source at (row, col) = M[:, :2] @ (i, j) + M[:, 2], M = matrices[n].

    Coordinates are (row, col), rows pointing down; pixel centres sit at
    whole numbers, so the centre of an H x W picture is c = ((H-1)/2, (W-1)/2).
    In these coordinates turning anticlockwise on screen by a is

        R(a) = [[cos a, -sin a],
                [sin a,  cos a]]       (col + 1 turns to row - 1: up)

    and the mirror is F = diag(1, -1) (it negates the column).  Forward,
    the picture is mirrored, rotated and zoomed about its centre, then
    shifted, and the output window is cut around the output's centre:

        p_out = c_out + shift + zoom * R(angle) F (p_in - c_in).

    Sampling needs the inverse, which solves this for p_in; R(a) is inverted
    by R(-a) and F by itself.  Write it as p_in = A p_out + b: A is the
    2 x 2 left block of the result, b its last column.
    """
    matrices = np.empty((len(angles), 2, 3))
    ### BEGIN SOLUTION
    c_in = (np.asarray(in_shape, dtype=float) - 1) / 2
    c_out = (np.asarray(out_shape, dtype=float) - 1) / 2
    cos, sin = np.cos(angles), np.sin(angles)
    mirror = np.where(flips, -1.0, 1.0)
    # A = F R(-angle) / zoom: R(-angle) in (row, col) coordinates, then the mirror negates the column.
    a = np.empty((len(angles), 2, 2))
    a[:, 0, 0], a[:, 0, 1] = cos, sin
    a[:, 1, 0], a[:, 1, 1] = -sin * mirror, cos * mirror
    a /= np.asarray(zooms, dtype=float)[:, None, None]
    origin = c_out + np.asarray(shifts, dtype=float)  # (N, 2): where the source centre lands
    matrices[:, :, :2] = a
    matrices[:, :, 2] = c_in - np.einsum("nij,nj->ni", a, origin)
    ### END SOLUTION
    return matrices


def _augment_with(images, angles, shifts, zooms, flips, out_size=IMAGE_SIZE, kernel=warp_bilinear):
    """augment_batch with the random draws given explicitly (see there).

    images: (N, C, H, W) uint8 or float in [0, 1], already checked.
    Returns float32 (N, C, out_size, out_size) in [0, 1].  ``kernel`` is
    the resampler: the compiled one unless a test passes ``_warp_bilinear``.
    """
    n, channels, height, width = images.shape
    matrices = _augment_matrices((height, width), (out_size, out_size), angles, shifts, zooms, flips)
    out = np.empty((n, channels, out_size, out_size), dtype=np.float32)
    scale = 1 / 255 if images.dtype == np.uint8 else 1.0
    if images.dtype not in (np.uint8, np.float32, np.float64):
        # The kernel is compiled for native uint8, float32 and float64; it
        # computes in float64, so float16 or big-endian input loses nothing.
        images = images.astype(np.float64)
    kernel(np.ascontiguousarray(images), matrices, scale, out)
    return out


def augment_batch(images, rng):
    """The training transform: random geometry per image, then scaling.

    images: (N, C, H, W) uint8 (or float in [0, 1]); H and W at least 1.
    rng: a numpy Generator; the same Generator state gives the same result.
    Per image, independently: rotation uniform in +-10 degrees, translation
    uniform in +-5 % of the height / width per axis, zoom uniform in
    0.9-1.1, left-right mirror with probability 1/2; then the central window
    of S = min(H, W, 96) pixels a side: 96 x 96 on Visual Wake Words, while
    smaller pictures keep their size, the size validation sees them at. All
    four are combined into one affine map and sampled once, bilinearly, with
    edge pixels repeated outside the frame.
    Returns float32 (N, C, S, S) in [0, 1].
    """
    images = as_pixels(images, "augment_batch")
    if images.ndim != 4:
        raise ValueError(f"augment_batch: images must have rank 4, N x C x H x W; got shape {images.shape}")
    n, _, height, width = images.shape
    if height == 0 or width == 0:  # the kernel would read outside the array
        raise ValueError(f"augment_batch: images must have at least one row and column; got shape "
                         f"{images.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"augment_batch: rng must be a numpy Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    angles = np.radians(rng.uniform(-10, 10, size=n))
    shifts = rng.uniform(-0.05, 0.05, size=(n, 2)) * np.array([height, width])
    zooms = rng.uniform(0.9, 1.1, size=n)
    flips = rng.random(n) < 0.5
    return _augment_with(images, angles, shifts, zooms, flips, out_size=min(height, width, IMAGE_SIZE))
