"""Reading the real Visual Wake Words from disk: list files and pictures.

Everything read here is untrusted input: list files are often downloaded,
pictures come from cameras, scanners and converters of every kind. So each
step refuses what it cannot take, with a message that names the file and
the list line it came from, and ``VisualWakeWords`` (in ``datasets.py``)
calls them in an order that checks everything cheap before decoding the
first picture:

1. ``read_image_list``: the list file as (where, name, label) entries
   (UTF-8, lines "<file name> <label>");
2. ``image_paths``: every name as a path to a regular file inside the data
   root;
3. ``read_image``: one picture as uint8 (3, 96, 96) RGB.

``where`` is always "<list file>, line <n>".
"""

import codecs
import stat
import warnings

import numpy as np

from .synthetic import IMAGE_SIZE

__all__ = ["read_image_list", "image_paths", "read_image"]

_LIST_LINE = "expected lines '<file name> <label>' there"
_LONGEST_PATH = 4096  # PATH_MAX on Linux, the most generous of the usual systems


def read_image_list(list_path):
    """Parse "<file name> <label>" lines into (where, name, label).

    ``where`` is "<list file>, line <n>", the place every later error about
    this entry points to.
    """
    entries = []
    for number, line in enumerate(_lines(_read_list_text(list_path)), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{list_path}, line {number}"
        if len(fields) != 2:
            raise ValueError(f"VisualWakeWords: list file {where}: expected '<file name> <label>' (two "
                             f"fields, no spaces in the name), got {_quoted(line.strip())}")
        name, label = fields
        if label not in ("0", "1"):
            raise ValueError(f"VisualWakeWords: list file {where}: label must be 0 or 1, got {_quoted(label)}")
        if not name.isprintable():  # a control character would also garble this very message
            raise ValueError(f"VisualWakeWords: list file {where}: the file name {_quoted(name)} contains "
                             "a control or other unprintable character")
        if len(name) > _LONGEST_PATH:  # and would flood every message that shows the path
            raise ValueError(f"VisualWakeWords: list file {where}: the file name {_quoted(name)} is longer "
                             f"than any file system accepts ({_LONGEST_PATH} characters)")
        entries.append((where, name, int(label)))
    if not entries:
        raise ValueError(f"VisualWakeWords: list file {list_path} names no images (it is empty or blank); "
                         f"{_LIST_LINE}")
    return entries


def _read_list_text(list_path):
    """The list file as text: UTF-8, a leading byte-order mark dropped."""
    what = f"VisualWakeWords: list file {list_path}"
    raw = _read_bytes(list_path, what, _LIST_LINE)
    body = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        line = len(_lines(body[:error.start].decode("utf-8")))  # all before the bad byte is fine
        hint = " (it looks like UTF-16)" if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else ""
        raise ValueError(f"{what}, line {line}: not UTF-8 text{hint}: byte 0x{body[error.start]:02x} "
                         f"cannot be decoded; save the file as UTF-8") from None


def _lines(text):
    """``text`` cut at \\n, \\r\\n or \\r, the line ends an editor counts.

    (``str.splitlines`` also cuts at form feeds and Unicode separators, and
    would number lines differently from the editor the user fixes them in.)
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def image_paths(root, folder, entries):
    """The path of every listed image in ``folder``, checked before any is decoded.

    A name must lead to a regular file inside ``root`` or inside ``folder``
    (which may be a link elsewhere): the comparison is between resolved
    paths, so ``..``, absolute names and links out are caught alike.
    """
    try:
        homes = (root.resolve(), folder.resolve())
    except (OSError, RuntimeError) as error:  # RuntimeError: a loop of symbolic links
        raise ValueError(f"VisualWakeWords: cannot resolve the data folder {folder}: {error}") from None
    paths = []
    for where, name, _ in entries:
        path = folder / name
        try:
            real = path.resolve()
        except (OSError, RuntimeError) as error:
            raise ValueError(f"VisualWakeWords: list file {where}: cannot resolve {_quoted(name)}: "
                             f"{error}") from None
        if not any(real.is_relative_to(home) for home in homes):
            raise ValueError(f"VisualWakeWords: list file {where}: {_quoted(name)} leads outside the data "
                             f"root {root} (to {real}); image names must stay inside it")
        _check_regular_file(path, f"VisualWakeWords: image {path} (listed in {where})",
                            "expected a picture there")
        paths.append(path)
    return paths


def _check_regular_file(path, what, expected):
    """Refuse ``path`` unless it is a regular file: not missing, not a folder,
    not a pipe or device (reading one could block for ever)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found; {expected}") from None
    except (OSError, ValueError) as error:  # permissions, a name too long, a file used as a folder
        raise ValueError(f"{what} cannot be read: {getattr(error, 'strerror', None) or error}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{what} is not a regular file; {expected}")


def _read_bytes(path, what, expected):
    _check_regular_file(path, what, expected)
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"{what} cannot be read: {error.strerror or error}") from None


def _quoted(text, limit=60):
    """``repr(text)``, cut short so that one bad line cannot flood a message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _pillow():
    """Pillow's Image module, imported late: only the real data set needs Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("VisualWakeWords reads pictures with Pillow, which is not installed "
                          "(pip install pillow)") from None
    return Image


def read_image(path, where):
    """One image file as uint8 (3, 96, 96) RGB; ``where`` is the list line that named it."""
    Image = _pillow()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Pillow warns about a header declaring more than MAX_IMAGE_PIXELS
            # and raises beyond twice that; both are refused, before decoding.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as picture:
                picture = _eight_bit(picture).convert("RGB")
                if picture.size != (IMAGE_SIZE, IMAGE_SIZE):
                    picture = picture.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
                pixels = np.asarray(picture, dtype=np.uint8)  # (H, W, 3)
        for warning in caught:  # Pillow's other warnings ("Truncated File Read", ...) name no file
            warnings.warn(f"VisualWakeWords: image {path} (listed in {where}): {warning.message}",
                          warning.category, stacklevel=3)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"VisualWakeWords: image {path} (listed in {where}) is too large to decode "
                         f"safely: {error} (raise PIL.Image.MAX_IMAGE_PIXELS if you trust it)") from None
    except Exception as error:
        # A damaged file surfaces from Pillow's decoders as OSError, SyntaxError,
        # struct.error, IndexError, ... depending on the format: all mean the same.
        raise ValueError(f"VisualWakeWords: cannot read image {path} (listed in {where}) as a picture: "
                         f"{error or type(error).__name__}") from error
    return pixels.transpose(2, 0, 1)


def _eight_bit(picture):
    """``picture`` with at most 8 bits per channel, ready for ``convert("RGB")``.

    Pillow opens a 16-bit grey file in mode "I;16" (or the 32-bit "I"), and
    its conversion to RGB clips every value above 255: nearly every pixel
    turns white. Keeping the top 8 of the 16 bits (value >> 8) maps the
    16-bit range onto the 8-bit one, as Pillow itself does when it opens
    16-bit colour. An "I" picture with values outside 0..65535, or a
    floating-point ("F") one, has no known white level and is refused.
    """
    if picture.mode == "F":
        raise ValueError("it has floating-point pixels (mode F), whose white level is unknown; "
                         "save it with 8 or 16 bits per channel")
    if picture.mode not in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        return picture
    values = np.asarray(picture)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"its 32-bit values run from {values.min()} to {values.max()}, beyond the "
                         "16-bit range 0..65535, so their white level is unknown")
    return _pillow().fromarray((values >> 8).astype(np.uint8))  # mode "L"
