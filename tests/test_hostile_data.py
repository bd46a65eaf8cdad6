"""Chapter 7, hostile input: every bad data input gets a clear error, and nothing is changed.

Issue 12 ("Nothing silent"), the items about data: an empty list file (4),
16-bit pictures (6), list files that point out of the data root (10),
encodings, huge, damaged and missing pictures, bad lines (16), and
arguments that gave raw NumPy or int() errors or were silently taken
(18). Each test asserts the exception type, that the message names the
argument, file or line, and that the files or arrays are unchanged after
the refusal. The fuzz tests at the end feed random list files, damaged
pictures and random arguments, and accept nothing but tinyprune's own
errors.  Tests that augment run exercise data.1 and carry its marker.
"""

import io
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tinyprune.data import DataLoader, SyntheticVWW, VisualWakeWords, as_dataset, augment_batch, to_float
from tinyprune.data.synthetic import draw_example

pytestmark = pytest.mark.data

GREY = (7, 8, 9)  # the colour of every ordinary test picture


# --- helpers --------------------------------------------------------------------


def _png(pixels, color_type, width=None, height=None):
    """A PNG file's bytes, written by hand for what Pillow cannot write.

    pixels: (H, W, C) uint8 or uint16 (16 bits per sample); color_type is
    PNG's (0 grey, 2 RGB, 4 grey + alpha, 6 RGBA). ``width``/``height``
    override the header's size, to declare a picture far larger than the
    data that follows.
    """
    h, w = pixels.shape[:2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    raw = b"".join(b"\x00" + row.astype(">u2" if depth == 16 else "u1").tobytes() for row in pixels)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width or w, height or h, depth, color_type, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _picture_bytes(size=(96, 96), colour=GREY, fmt="PNG"):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


def _vww(root, listing, files=None, subset="train"):
    """Write <root>/<subset>.txt (bytes or text) and <root>/<subset>/<name> files (bytes)."""
    (root / subset).mkdir(parents=True, exist_ok=True)
    data = listing if isinstance(listing, bytes) else listing.encode()
    (root / f"{subset}.txt").write_bytes(data)
    for name, content in (files or {}).items():
        (root / subset / name).parent.mkdir(parents=True, exist_ok=True)
        (root / subset / name).write_bytes(content)
    return root


def _snapshot(folder):
    """Every file under ``folder`` (links not followed): its bytes and modification time."""
    found = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_symlink():
            found[str(path)] = ("link", os.readlink(path))
        elif path.is_file():
            found[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


def _refused(error, pattern, root, subset="train"):
    """VisualWakeWords(root, subset) raises ``error`` matching ``pattern``, changing no file."""
    before = _snapshot(root.parent)
    with pytest.raises(error, match=pattern) as caught:
        VisualWakeWords(root, subset)
    assert type(caught.value) is error  # not a subclass such as UnicodeDecodeError
    assert _snapshot(root.parent) == before
    return caught.value


def _line(n):
    """The place a message must name: this test's list file and line ``n``."""
    return rf"train\.txt, line {n}\b"


# --- 4: an empty list file --------------------------------------------------------


@pytest.mark.parametrize("listing", [b"", b"\n\n   \n\t\n", b"\xef\xbb\xbf", b"\r\n\r\n"])
def test_a_list_file_naming_no_images_is_refused_naming_it(tmp_path, listing):
    root = _vww(tmp_path / "vww", listing)
    _refused(ValueError, r"VisualWakeWords: list file .*train\.txt names no images", root)


def test_as_dataset_refuses_an_empty_set_only_when_the_caller_asks():
    empty = (np.zeros((0, 3, 8, 8), np.uint8), np.zeros(0, np.int64))
    assert len(as_dataset(empty)) == 0                      # a valid value by default
    with pytest.raises(ValueError, match=r"^trainer: data\[0\]: the data set is empty \(0 images\)"):
        as_dataset(empty, "trainer: data[0]", allow_empty=False)


# --- 6: 16-bit pictures are scaled by their bit depth, not clipped to white -------

_RAMP16 = (np.arange(96 * 96, dtype=np.uint32).reshape(96, 96) * 7).astype(np.uint16)  # 0..64505


def test_a_16_bit_grey_png_keeps_its_top_8_bits(tmp_path):
    root = _vww(tmp_path / "vww", "deep.png 1\n")
    Image.fromarray(_RAMP16).save(root / "train" / "deep.png")   # Pillow writes mode I;16 as 16-bit PNG
    images = VisualWakeWords(root).images
    expected = (_RAMP16 >> 8).astype(np.uint8)
    assert all(np.array_equal(images[0, c], expected) for c in range(3))
    assert images.mean() < 128  # the ramp's mean, not the white of a clipped picture


def test_a_big_endian_16_bit_grey_tiff_keeps_its_top_8_bits(tmp_path):
    root = _vww(tmp_path / "vww", "deep.tif 0\n")
    Image.fromarray(_RAMP16.astype(">u2")).save(root / "train" / "deep.tif")  # mode I;16B
    assert np.array_equal(VisualWakeWords(root).images[0, 1], (_RAMP16 >> 8).astype(np.uint8))


def test_a_32_bit_grey_tiff_with_16_bit_values_is_scaled_as_16_bit(tmp_path):
    root = _vww(tmp_path / "vww", "deep.tif 0\n")
    Image.fromarray(_RAMP16.astype(np.int32)).save(root / "train" / "deep.tif")  # mode I
    assert np.array_equal(VisualWakeWords(root).images[0, 2], (_RAMP16 >> 8).astype(np.uint8))


def test_a_16_bit_rgb_png_keeps_its_top_8_bits_per_channel(tmp_path):
    pixels = np.empty((96, 96, 3), np.uint16)
    pixels[...] = (65535, 32768, 256)                        # top bytes 255, 128, 1
    root = _vww(tmp_path / "vww", "colour.png 1\n", {"colour.png": _png(pixels, color_type=2)})
    assert VisualWakeWords(root).images[0, :, 40, 40].tolist() == [255, 128, 1]


@pytest.mark.parametrize("values, message", [
    (np.full((8, 8), 70000, np.int32), r"its 32-bit values run from 70000 to 70000, beyond the 16-bit range"),
    (np.full((8, 8), -5, np.int32), r"its 32-bit values run from -5"),
    (np.full((8, 8), 0.5, np.float32), r"it has floating-point pixels \(mode F\)"),
])
def test_pictures_without_a_known_white_level_are_refused_naming_file_and_line(tmp_path, values, message):
    root = _vww(tmp_path / "vww", "a.png 0\nodd.tif 1\n", {"a.png": _picture_bytes()})
    Image.fromarray(values).save(root / "train" / "odd.tif")
    _refused(ValueError, rf"cannot read image .*odd\.tif \(listed in .*{_line(2)}\) as a picture: {message}",
             root)


def test_8_bit_pictures_read_as_before(tmp_path):
    root = _vww(tmp_path / "vww", "a.png 1\nb.jpg 0\n",
                {"a.png": _picture_bytes(), "b.jpg": _picture_bytes(colour=(200, 100, 0), fmt="JPEG")})
    images = VisualWakeWords(root).images
    assert images[0, :, 10, 10].tolist() == list(GREY)
    assert np.abs(images[1, :, 10, 10].astype(int) - [200, 100, 0]).max() <= 3  # JPEG is lossy


# --- 10: names that lead out of the data root ---------------------------------------


@pytest.fixture
def world(tmp_path):
    """A data root ``vww`` with one picture, next to a picture outside it."""
    (tmp_path / "secret.png").write_bytes(_picture_bytes(colour=(1, 1, 1)))
    return _vww(tmp_path / "vww", "", {"a.png": _picture_bytes()})


@pytest.mark.parametrize("name", ["../../secret.png", "../../vww/../secret.png", "sub/../../../secret.png",
                                  "ABSOLUTE"])
def test_a_name_leading_out_of_the_root_is_refused_naming_file_and_line(world, name):
    name = str(world.parent / "secret.png") if name == "ABSOLUTE" else name
    (world / "train.txt").write_text(f"a.png 1\n{name} 0\n")
    error = _refused(ValueError, rf"VisualWakeWords: list file .*{_line(2)}: .*leads outside the data root",
                     world)
    assert "image names must stay inside it" in str(error)


def test_a_link_out_of_the_root_is_refused(world):
    os.symlink(world.parent / "secret.png", world / "train" / "link.png")
    (world / "train.txt").write_text("link.png 1\n")
    _refused(ValueError, rf"{_line(1)}: 'link.png' leads outside the data root .*secret\.png", world)


def test_links_and_dot_dots_that_stay_inside_the_root_are_followed(world):
    (world / "pool").mkdir()
    (world / "pool" / "p.png").write_bytes(_picture_bytes(colour=(50, 60, 70)))
    os.symlink(world / "pool" / "p.png", world / "train" / "link.png")
    (world / "train.txt").write_text("link.png 1\n../pool/p.png 0\n")
    images = VisualWakeWords(world).images
    assert images[:, :, 0, 0].tolist() == [[50, 60, 70], [50, 60, 70]]


def test_an_image_folder_that_is_a_link_to_another_disk_is_followed(tmp_path):
    elsewhere = tmp_path / "big-disk" / "train"
    elsewhere.mkdir(parents=True)
    (elsewhere / "a.png").write_bytes(_picture_bytes())
    (tmp_path / "vww").mkdir()
    os.symlink(elsewhere, tmp_path / "vww" / "train")
    (tmp_path / "vww" / "train.txt").write_text("a.png 1\n")
    assert VisualWakeWords(tmp_path / "vww").images[0, :, 5, 5].tolist() == list(GREY)


def test_every_name_is_checked_before_any_picture_is_decoded(world):
    (world / "train" / "broken.png").write_bytes(b"not a picture")
    (world / "train.txt").write_text("broken.png 1\n../../secret.png 0\n")
    _refused(ValueError, _line(2), world)    # the bad path on line 2 is found before line 1 is decoded


# --- 16: encodings, huge, damaged and missing pictures, bad lines --------------------


def test_a_utf8_byte_order_mark_is_skipped(world):
    (world / "train.txt").write_bytes(b"\xef\xbb\xbfa.png 1\n")
    assert VisualWakeWords(world).labels.tolist() == [1]


def test_tabs_crlf_and_cr_line_ends_are_read_like_an_editor_reads_them(world):
    (world / "train.txt").write_bytes(b"a.png\t1\r\n\r\na.png  0\ra.png 1")
    assert VisualWakeWords(world).labels.tolist() == [1, 0, 1]


def test_a_line_number_counts_cr_line_ends(world):
    (world / "train.txt").write_bytes(b"a.png 1\ra.png 0\ra.png 7\r")
    _refused(ValueError, rf"{_line(3)}: label must be 0 or 1, got '7'", world)


@pytest.mark.parametrize("listing, line, hint", [
    (b"a.png 1\n\nb\xe9.png 0\n", 3, ""),                              # Latin-1
    ("a.png 1\n".encode("utf-16"), 1, r" \(it looks like UTF-16\)"),
    (b"a.png 1\n\xc3", 2, ""),                                         # cut inside a character
    (b"a.png 1\r\n\xff\xfe 0", 2, ""),
])
def test_a_list_file_that_is_not_utf8_names_file_and_line(world, listing, line, hint):
    (world / "train.txt").write_bytes(listing)
    _refused(ValueError, rf"VisualWakeWords: list file .*{_line(line)}: not UTF-8 text{hint}", world)


@pytest.mark.parametrize("width, height", [(20000, 20000), (10000, 10000)])
def test_a_picture_declaring_too_many_pixels_is_refused_before_decoding(world, width, height):
    # 20,000^2 passes Pillow's error limit, 10,000^2 only its warning limit: both are refused.
    bomb = _png(np.zeros((2, 2, 3), np.uint8), color_type=2, width=width, height=height)
    _vww(world, "a.png 1\nbomb.png 0\n", {"bomb.png": bomb})
    _refused(ValueError, rf"image .*bomb\.png \(listed in .*{_line(2)}\) is too large to decode safely: "
             rf"Image size \({width * height} pixels\)", world)


@pytest.mark.parametrize("damage", ["truncated", "header", "empty", "text"])
def test_a_damaged_picture_names_file_and_line(world, damage):
    good = _picture_bytes(size=(40, 40))
    content = {"truncated": good[: len(good) // 2], "header": b"\x89PNG\r\n\x1a\x00" + good[8:],
               "empty": b"", "text": b"GIF89a but not really"}[damage]
    _vww(world, "a.png 1\nbad.png 0\n", {"bad.png": content})
    _refused(ValueError, rf"cannot read image .*bad\.png \(listed in .*{_line(2)}\) as a picture", world)


def test_pillows_warnings_about_a_picture_name_its_file_and_line(world):
    palette = Image.new("P", (96, 96), 1)
    palette.putpalette([7, 8, 9] * 256)
    palette.save(world / "train" / "p.png", transparency=bytes([0, 128] + [255] * 254))  # Pillow warns
    (world / "train.txt").write_text("a.png 1\np.png 0\n")
    expected = rf"^VisualWakeWords: image .*p\.png \(listed in .*{_line(2)}\): Palette"
    with pytest.warns(UserWarning, match=expected):
        images = VisualWakeWords(world).images
    assert images[1, :, 0, 0].tolist() == [7, 8, 9]


@pytest.mark.parametrize("name, error, message", [
    ("ghost.png", FileNotFoundError, r"image .*ghost\.png \(listed in .*LINE\) not found"),
    ("sub", ValueError, r"image .*sub \(listed in .*LINE\) is not a regular file"),
    ("a.png/inner.png", ValueError, r"image .*inner\.png \(listed in .*LINE\) cannot be read"),
    ("a\x1b[2J.png", ValueError, r"LINE: the file name .* contains a control"),
    ("x" * 5000, ValueError, r"LINE: the file name 'xxxx.*\(5000 characters\) is longer than any file system"),
    ("loop.png", ValueError, r"LINE: cannot resolve 'loop\.png'"),
])
def test_a_name_that_is_no_readable_file_names_file_and_line(world, name, error, message):
    (world / "train" / "sub").mkdir()
    os.symlink("loop.png", world / "train" / "loop.png")
    (world / "train.txt").write_text(f"a.png 1\n\n{name} 0\n")
    _refused(error, message.replace("LINE", _line(3)), world)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_is_refused_not_read_for_ever(world):
    os.mkfifo(world / "train" / "pipe.png")
    (world / "train.txt").write_text("pipe.png 1\n")
    _refused(ValueError, rf"pipe\.png \(listed in .*{_line(1)}\) is not a regular file", world)


@pytest.mark.parametrize("line, message", [
    ("a.png 01", "label must be 0 or 1, got '01'"),
    ("a.png \uff11", "label must be 0 or 1, got '\uff11'"),       # a full-width digit one
    ("a.png true", "label must be 0 or 1, got 'true'"),
    ("a.png 0.0", "label must be 0 or 1, got '0.0'"),
    ("a.png 1,", "label must be 0 or 1, got '1,'"),
    ("a.png,1", "expected '<file name> <label>' .*got 'a.png,1'"),
    ("a.png 1 # a comment", "expected '<file name> <label>' .*got 'a.png 1 # a comment'"),
])
def test_more_bad_lines_name_file_and_line(world, line, message):
    (world / "train.txt").write_text(f"a.png 1\n {line} \n")
    _refused(ValueError, rf"{_line(2)}: {message}", world)


def test_a_list_file_that_is_a_folder_is_refused_naming_it(tmp_path):
    (tmp_path / "vww" / "val.txt").mkdir(parents=True)
    _refused(ValueError, r"VisualWakeWords: list file .*val\.txt is not a regular file", tmp_path / "vww", "val")


# --- 18: arguments ---------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, message", [
    ({"seed": None}, TypeError, r"seed must be an integer >= 0, got None"),
    ({"seed": "3"}, TypeError, r"seed must be an integer >= 0, got '3'"),
    ({"seed": 1.0}, TypeError, r"seed must be an integer >= 0, got 1\.0"),
    ({"size": True}, TypeError, r"size \(the number of images\) must be an integer >= 1, got True"),
    ({"size": np.bool_(True)}, TypeError, r"size .* must be an integer >= 1, got (np\.)?True_?"),
    ({"size": "8"}, TypeError, r"size .* must be an integer >= 1, got '8'"),
    ({"subset": None}, ValueError, r"subset must be 'train' or 'val', got None"),
    ({"subset": ["train"]}, ValueError, r"subset must be 'train' or 'val', got \['train'\]"),
    ({"subset": np.array(["train", "val"])}, ValueError, r"subset must be 'train' or 'val'"),
    ({"cache_dir": 5}, TypeError, r"cache_dir must be a path \(str or os\.PathLike\), got 5"),
    ({"cache_dir": b"bytes"}, TypeError, r"cache_dir must be a path"),
    ({"cache_dir": ""}, ValueError, r"cache_dir must be a non-empty path"),
    ({"cache_dir": "a\0b"}, ValueError, r"cache_dir must be a non-empty path without NUL"),
])
def test_bad_synthetic_arguments_name_the_class_and_argument_and_write_nothing(tmp_path, monkeypatch, kwargs,
                                                                               error, message):
    monkeypatch.chdir(tmp_path)              # a refused relative cache_dir would land here
    with pytest.raises(error, match=r"^SyntheticVWW: " + message):
        SyntheticVWW(**{"size": 2, "cache_dir": tmp_path / "cache", **kwargs})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, error, message", [
    (("test", 0, 4), ValueError, r"subset must be 'train' or 'val'"),
    (("train", -1, 4), ValueError, r"seed must be an integer >= 0, got -1"),
    (("train", 0, -1), ValueError, r"size .* must be an integer >= 1, got -1"),
    (("train", 0, 4, 1.5), TypeError, r"first .* must be an integer >= 0, got 1\.5"),
])
def test_generate_checks_its_arguments(args, error, message):
    with pytest.raises(error, match=r"^SyntheticVWW\.generate: " + message):
        SyntheticVWW.generate(*args)


@pytest.mark.parametrize("label, rng, error, message", [
    (2, np.random.default_rng(0), ValueError, r"label must be 0 or 1, got 2"),
    (True, np.random.default_rng(0), TypeError, r"label must be an integer >= 0, got True"),
    (1, None, TypeError, r"rng must be a numpy Generator, got NoneType"),
])
def test_draw_example_checks_label_and_generator(label, rng, error, message):
    with pytest.raises(error, match=r"^draw_example: " + message):
        draw_example(rng, label)


def _pair(n=4):
    return np.arange(n * 3 * 4 * 4, dtype=np.uint8).reshape(n, 3, 4, 4), np.arange(n) % 2


@pytest.mark.parametrize("kwargs, error, message", [
    ({"batch_size": None}, TypeError, r"batch_size must be an integer >= 1, got None"),
    ({"batch_size": "32"}, TypeError, r"batch_size must be an integer >= 1, got '32'"),
    ({"batch_size": 2.0}, TypeError, r"batch_size must be an integer >= 1, got 2\.0"),
    ({"batch_size": True}, TypeError, r"batch_size must be an integer >= 1, got True"),
    ({"seed": None}, TypeError, r"seed must be an integer >= 0, got None"),
    ({"shuffle": "no"}, TypeError, r"shuffle must be True or False, got 'no'"),
    ({"drop_last": 1}, TypeError, r"drop_last must be True or False, got 1"),
    ({"augment": None}, TypeError, r"augment must be True or False, got None"),
    ({"data": (np.zeros((2, 3, 4, 4), np.int32), [0, 1])}, ValueError, r"images must be uint8 .*dtype int32"),
    ({"data": ([[[[0]]], [[[0, 1]]]], [0, 1])}, ValueError, r"images cannot be made into one array"),
])
def test_bad_loader_arguments_name_the_argument_and_leave_the_data_alone(kwargs, error, message):
    images, labels = _pair()
    kept = images.copy(), labels.copy()
    with pytest.raises(error, match=r"^DataLoader: " + message):
        DataLoader(**{"data": (images, labels), **kwargs})
    assert np.array_equal(images, kept[0]) and np.array_equal(labels, kept[1])


@pytest.mark.parametrize("epoch, error", [(-1, ValueError), ("2", TypeError), (1.0, TypeError)])
def test_a_bad_resume_epoch_is_refused_when_the_epoch_starts(epoch, error):
    loader = DataLoader(_pair(), batch_size=2)
    loader.epoch = epoch
    with pytest.raises(error, match=r"^DataLoader: epoch must be an integer >= 0, got"):
        iter(loader)
    assert loader.epoch == epoch                       # not advanced by the refused call


def test_a_data_set_object_with_list_images_is_batched():
    class Listed:
        images, labels = list(_pair()[0]), [0, 1, 0, 1]      # a list of uint8 pictures
    (x, y), = DataLoader(Listed(), batch_size=4, shuffle=False)
    assert np.array_equal(x, to_float(_pair()[0])) and y.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("root, error, message", [
    (None, TypeError, r"root must be a path \(str or os\.PathLike\), got None"),
    (3, TypeError, r"root must be a path"),
    ("", ValueError, r"root must be a non-empty path"),
])
def test_bad_roots_name_the_argument(root, error, message):
    with pytest.raises(error, match=r"^VisualWakeWords: " + message):
        VisualWakeWords(root)


@pytest.mark.parametrize("subset", ["test", None, ("train",)])
def test_bad_subsets_name_the_argument(tmp_path, subset):
    with pytest.raises(ValueError, match=r"^VisualWakeWords: subset must be 'train' or 'val', got"):
        VisualWakeWords(tmp_path, subset)


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((2, 0, 4, 4), np.uint8), [0, 1],
     r"images must have at least one channel, row and column; got shape \(2, 0, 4, 4\)"),
    (np.zeros((2, 3, 0, 4), np.uint8), [0, 1], r"images must have at least one channel, row and column"),
    (np.zeros((2, 3, 4, 4), np.uint8), np.array([1, 0], complex),
     r"labels must be numbers 0 or 1; got dtype complex"),
    (np.zeros((2, 3, 4, 4), np.uint8), [[0], [1, 1]], r"labels cannot be made into one array"),
    (np.zeros((2, 3, 4, 4), np.uint8), [0, np.nan], r"labels must be 0 or 1; found \[nan\]"),
    (np.full((2, 3, 4, 4), np.inf, np.float32), [0, 1], r"float images must lie in \[0, 1\]"),
])
def test_more_bad_arrays_are_refused_naming_what_is_wrong(images, labels, message):
    with pytest.raises(ValueError, match=r"^as_dataset: " + message):
        as_dataset((images, labels))


@pytest.mark.parametrize("images, message", [
    (np.full((1, 3, 2, 2), 200, np.int32),
     r"images must be uint8 in \[0, 255\] or float in \[0, 1\]; got dtype int32"),
    (None, r"images must be uint8 .*got dtype object"),
    ([[0.5], [0.5, 0.5]], r"images cannot be made into one array"),
    (np.full((1, 3, 2, 2), 7.0), r"float images must lie in \[0, 1\]; got values from 7\.0"),
])
def test_to_float_refuses_what_it_would_scale_wrongly(images, message):
    with pytest.raises(ValueError, match=r"^to_float: " + message):
        to_float(images)


@pytest.mark.parametrize("images, rng, error, message", [
    (np.full((1, 3, 8, 8), 200, np.int32), np.random.default_rng(0), ValueError,
     r"images must be uint8 .*got dtype int32"),
    (np.zeros((1, 3, 0, 8), np.uint8), np.random.default_rng(0), ValueError,
     r"images must have at least one row and column; got shape \(1, 3, 0, 8\)"),
    (np.zeros((1, 3, 8, 8), np.uint8), 0, TypeError, r"rng must be a numpy Generator .*got int"),
])
def test_augment_batch_refuses_bad_input_by_name(images, rng, error, message):
    kept = images.copy()
    with pytest.raises(error, match=r"^augment_batch: " + message):
        augment_batch(images, rng)
    assert np.array_equal(images, kept)


@pytest.mark.ex_data_1
@pytest.mark.parametrize("dtype", [np.float16, ">f4", ">f8"])
def test_augment_batch_takes_any_float_layout_with_the_same_result(dtype):
    images = np.random.default_rng(1).random((2, 3, 12, 12)).astype(np.float16).astype(np.float64)
    reference = augment_batch(images, np.random.default_rng(5))
    assert np.array_equal(augment_batch(images.astype(dtype), np.random.default_rng(5)), reference)


# --- fuzz: nothing but tinyprune's own errors ------------------------------------------

_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    """A data root with good, nested, linked and missing entries to name, and a picture outside it."""
    base = tmp_path_factory.mktemp("fuzz")
    (base / "outside.png").write_bytes(_picture_bytes(colour=OUTSIDE))
    root = _vww(base / "vww", "", {"a.png": _picture_bytes(), "sub/b.png": _picture_bytes(size=(30, 50))})
    (root / "train" / "folder").mkdir()
    os.symlink(base / "outside.png", root / "train" / "out.png")
    return root


OUTSIDE = (1, 2, 250)  # the colour of the fuzz root's picture outside the data root


def _only_our_errors(root, list_bytes):
    """Read the set; any error must be ours and name the list file (and a line if a line is to blame).

    A set that is read must hold nothing from outside the data root.
    """
    list_path = root / "train.txt"
    list_path.write_bytes(list_bytes)
    before = _snapshot(root.parent)
    try:
        data = VisualWakeWords(root)
    except (ValueError, FileNotFoundError) as error:
        assert type(error) in (ValueError, FileNotFoundError), type(error)  # no UnicodeDecodeError
        message = str(error)
        assert message.startswith("VisualWakeWords: ") and str(list_path) in message, message
        assert "line " in message or "names no images" in message, message
    else:
        assert data.images.shape == (len(data.labels), 3, 96, 96) and set(data.labels) <= {0, 1}
        assert not any(picture[:, 0, 0].tolist() == list(OUTSIDE) for picture in data.images)
    assert _snapshot(root.parent) == before


@_FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_as_a_list_file(fuzz_root, raw):
    _only_our_errors(fuzz_root, raw)


_NAMES = ["a.png", "sub/b.png", "ghost.png", "../outside.png", "../../outside.png", "out.png", "folder",
          ".", "..", "/etc/passwd", "a.png/x", "é.png", "a\x00.png", "a b.png", "C:\\x.png", "x" * 300]
_LABELS = ["0", "1", "2", "-1", "", "yes", "0 1", "1.0"]


@_FUZZ
@given(st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from([" ", "\t", "  ", ""]),
                          st.sampled_from(_LABELS), st.sampled_from(["\n", "\r\n", "\r", "\n\n"])), max_size=6),
       st.booleans())
def test_fuzz_random_lines_as_a_list_file(fuzz_root, lines, bom):
    text = "".join(name + gap + label + end for name, gap, label, end in lines)
    _only_our_errors(fuzz_root, (b"\xef\xbb\xbf" if bom else b"") + text.encode())


@_FUZZ
@given(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF"]), st.integers(0, 4000),
       st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4))
def test_fuzz_damaged_pictures(fuzz_root, fmt, cut, flips):
    content = bytearray(_picture_bytes(size=(20, 30), fmt=fmt))
    for offset, value in flips:
        content[offset % len(content)] = value
    (fuzz_root / "train" / "damaged.img").write_bytes(bytes(content[:max(cut, 1)]))
    try:
        _only_our_errors(fuzz_root, b"a.png 1\ndamaged.img 0\n")
    finally:
        (fuzz_root / "train" / "damaged.img").unlink()


_ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True),
                      st.text(max_size=4), st.lists(st.integers(0, 2), max_size=2))


_SOME_VALID = st.one_of(st.integers(1, 4), _ANYTHING)  # so that the later arguments get checked too


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.sampled_from(["train", "val"]), _ANYTHING), _SOME_VALID,
       _SOME_VALID.filter(lambda size: size is not None))       # None means the default 8,000: valid, slow
def test_fuzz_synthetic_arguments(subset, seed, size):
    with tempfile.TemporaryDirectory() as folder:
        try:
            data = SyntheticVWW(subset, seed, size, cache_dir=folder)
        except (TypeError, ValueError) as error:
            assert str(error).startswith("SyntheticVWW: "), error
            assert os.listdir(folder) == []
        else:
            assert len(data) == size


@pytest.mark.ex_data_1           # an augmenting loader runs the augmentation's map
@settings(max_examples=100, deadline=None)
@given(_SOME_VALID, _ANYTHING, _SOME_VALID, _ANYTHING, _ANYTHING)
def test_fuzz_loader_arguments(batch_size, shuffle, seed, drop_last, augment):
    images, labels = _pair(3)
    try:
        loader = DataLoader((images, labels), batch_size, shuffle, seed, drop_last, augment)
    except (TypeError, ValueError) as error:
        assert str(error).startswith("DataLoader: "), error
    else:
        assert all(type(switch) is bool for switch in (loader.shuffle, loader.drop_last, loader.augment))
        assert sum(len(y) for _, y in loader) <= 3
    assert np.array_equal(images, _pair(3)[0]) and np.array_equal(labels, _pair(3)[1])


_DTYPES = [np.uint8, np.int8, np.int32, np.float16, np.float32, np.float64, np.complex64, bool, object, "U1"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_DTYPES), st.lists(st.integers(0, 3), min_size=3, max_size=5),
       st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0]), st.sampled_from(_DTYPES), st.integers(0, 4))
def test_fuzz_arrays_given_as_a_data_set(image_dtype, shape, fill, label_dtype, n_labels):
    images = np.full(shape, fill).astype(image_dtype)
    labels = (np.arange(n_labels) % 2).astype(label_dtype)
    try:
        data = as_dataset((images, labels))
    except (TypeError, ValueError) as error:
        assert type(error) in (TypeError, ValueError) and str(error).startswith("as_dataset: "), error
    else:
        assert data.labels.dtype == np.int64 and len(data.labels) == len(data.images)
        assert min(data.images.shape[1:]) >= 1 and labels.dtype.kind in "biuf"
        assert to_float(data.images).dtype == np.float32
