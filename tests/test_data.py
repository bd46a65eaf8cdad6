"""Chapter 7: data sets, augmentation and loading (run with ``pytest -m data``).

Small sizes throughout (64 synthetic images, tiny fake Visual Wake Words
folders) so the whole chapter runs in seconds.  The augmentation's affine
map (``augment._augment_matrices``) is exercise data.1: its tests carry
``ex_data_1``, from single pixels followed through each transform to whole
augmented batches.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import tinyprune
from tinyprune import data
from tinyprune.data import (
    DataLoader,
    SyntheticVWW,
    VisualWakeWords,
    as_dataset,
    augment,
    augment_batch,
    shapes,
    synthetic,
    to_float,
)

SIZE = 64  # images per synthetic test set


@pytest.fixture(scope="module")
def small_train():
    """64 synthetic training images, generated once for the module."""
    return SyntheticVWW.generate("train", seed=0, size=SIZE)


# --- SyntheticVWW: what it contains ----------------------------------------


@pytest.mark.data
def test_synthetic_images_are_uint8_nchw_96_and_c_contiguous(tmp_path):
    ds = SyntheticVWW("train", seed=0, size=SIZE, cache_dir=tmp_path)
    assert ds.images.shape == (SIZE, 3, 96, 96)
    assert ds.images.dtype == np.uint8
    assert ds.images.flags.c_contiguous
    assert len(ds) == SIZE


@pytest.mark.data
def test_synthetic_labels_are_int64_zero_or_one(small_train):
    _, labels = small_train
    assert labels.dtype == np.int64
    assert labels.shape == (SIZE,)
    assert set(np.unique(labels).tolist()) == {0, 1}


@pytest.mark.data
def test_synthetic_classes_are_exactly_half_each(small_train):
    _, labels = small_train
    assert labels.sum() == SIZE // 2


@pytest.mark.data
def test_synthetic_labels_are_shuffled_not_in_blocks(small_train):
    _, labels = small_train
    assert not np.array_equal(labels, np.sort(labels))
    assert not np.array_equal(labels, np.sort(labels)[::-1])


@pytest.mark.data
def test_synthetic_images_use_the_whole_intensity_range(small_train):
    images, _ = small_train
    assert images.min() < 30 and images.max() > 225


@pytest.mark.data
def test_synthetic_classes_have_similar_mean_intensity(small_train):
    # The label must not be readable from brightness alone.
    images, labels = small_train
    means = [images[labels == k].mean() for k in (0, 1)]
    assert abs(means[0] - means[1]) < 15


# --- SyntheticVWW: determinism -----------------------------------------------


@pytest.mark.data
def test_same_subset_and_seed_give_identical_bytes(small_train):
    images, labels = SyntheticVWW.generate("train", seed=0, size=SIZE)
    assert images.tobytes() == small_train[0].tobytes()
    assert np.array_equal(labels, small_train[1])


@pytest.mark.data
def test_a_different_seed_gives_different_images(small_train):
    images, _ = SyntheticVWW.generate("train", seed=1, size=SIZE)
    assert not np.array_equal(images, small_train[0])


@pytest.mark.data
def test_val_is_a_different_stream_from_train(small_train):
    images, _ = SyntheticVWW.generate("val", seed=0, size=SIZE)
    # Not one val image may repeat a train image.
    train_rows = {image.tobytes() for image in small_train[0]}
    assert not any(image.tobytes() in train_rows for image in images)


@pytest.mark.data
def test_default_sizes_are_8000_train_and_2000_val():
    assert SyntheticVWW.DEFAULT_SIZES == {"train": 8000, "val": 2000}


@pytest.mark.data
@pytest.mark.parametrize(
    "kwargs, message",
    [({"subset": "test"}, "SyntheticVWW: subset must be 'train' or 'val', got 'test'"),
     ({"size": 0}, r"SyntheticVWW: size .*must be an integer >= 1, got 0"),
     ({"seed": -1}, r"SyntheticVWW: seed must be an integer >= 0, got -1")],
)
def test_bad_synthetic_arguments_raise_value_error(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        SyntheticVWW(**{"size": 4, **kwargs}, cache_dir=tmp_path)


@pytest.mark.data
def test_a_fractional_synthetic_size_raises_type_error(tmp_path):
    # A whole number is expected; 2.5 is not one (nor is 2.0: no silent conversion).
    with pytest.raises(TypeError, match=r"SyntheticVWW: size .*must be an integer >= 1, got 2\.5"):
        SyntheticVWW(size=2.5, cache_dir=tmp_path)


# --- SyntheticVWW: the cache -------------------------------------------------


@pytest.mark.data
def test_cache_file_is_named_by_version_subset_seed_and_size(tmp_path):
    SyntheticVWW("val", seed=3, size=8, cache_dir=tmp_path)
    name = f"synthetic-vww-v{SyntheticVWW.VERSION}-val-seed3-n8.npz"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # and no temporary file left


@pytest.mark.data
def test_cached_set_is_loaded_not_regenerated(tmp_path, monkeypatch):
    first = SyntheticVWW("train", seed=0, size=8, cache_dir=tmp_path)

    draw = SyntheticVWW.generate

    def refuse_all_but_a_spot_check(subset, seed, size, first=None):
        if first is None or first >= size:
            raise AssertionError("generated again despite a cache file")
        return draw(subset, seed, size, first)

    monkeypatch.setattr(SyntheticVWW, "generate", staticmethod(refuse_all_but_a_spot_check))
    second = SyntheticVWW("train", seed=0, size=8, cache_dir=tmp_path)
    assert second.images.tobytes() == first.images.tobytes()
    assert np.array_equal(second.labels, first.labels)


@pytest.mark.data
@pytest.mark.parametrize("damage", [b"not a zip file", b""])
def test_corrupt_cache_is_regenerated_with_a_warning(tmp_path, damage):
    fresh = SyntheticVWW("train", seed=0, size=8, cache_dir=tmp_path)
    fresh.cache_path.write_bytes(damage)
    with pytest.warns(UserWarning, match="regenerating"):
        again = SyntheticVWW("train", seed=0, size=8, cache_dir=tmp_path)
    assert again.images.tobytes() == fresh.images.tobytes()
    # ... and the repaired file is good again: the next load is silent.
    np.load(again.cache_path, allow_pickle=False).close()


@pytest.mark.data
def test_cache_drawn_by_other_generator_code_is_regenerated(tmp_path):
    # Same file name, shapes and labels, other pixels: what a generator change
    # without a VERSION bump leaves behind.
    fresh = SyntheticVWW("train", seed=0, size=8, cache_dir=tmp_path)
    np.savez(fresh.cache_path, images=255 - fresh.images, labels=fresh.labels)
    with pytest.warns(UserWarning, match="drawn by a different version of the generator"):
        again = SyntheticVWW("train", seed=0, size=8, cache_dir=tmp_path)
    assert again.images.tobytes() == fresh.images.tobytes()
    first, labels = SyntheticVWW.generate("train", 0, 8, first=3)
    assert first.shape == (3, 3, 96, 96) and np.array_equal(first, fresh.images[:3])
    assert np.array_equal(labels, fresh.labels)


@pytest.mark.data
def test_cache_with_wrong_shape_is_regenerated(tmp_path):
    fresh = SyntheticVWW("train", seed=0, size=8, cache_dir=tmp_path)
    np.savez(fresh.cache_path, images=np.zeros((2, 3, 96, 96), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.warns(UserWarning, match="expected uint8"):
        again = SyntheticVWW("train", seed=0, size=8, cache_dir=tmp_path)
    assert again.images.tobytes() == fresh.images.tobytes()


@pytest.mark.data
def test_failed_cache_write_leaves_no_file(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.warns(UserWarning, match="could not cache"):
        ds = SyntheticVWW("train", seed=0, size=4, cache_dir=tmp_path)
    assert len(ds) == 4
    assert list(tmp_path.iterdir()) == []


@pytest.mark.data
def test_default_cache_folder_is_data_dir_slash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPRUNE_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path
    ds = SyntheticVWW("train", seed=0, size=4)
    assert ds.cache_path.parent == tmp_path / "cache"
    assert ds.cache_path.is_file()


@pytest.mark.data
def test_data_dir_is_repo_data_folder_in_a_checkout(monkeypatch):
    monkeypatch.delenv("TINYPRUNE_DATA", raising=False)
    repo = Path(tinyprune.__file__).resolve().parents[1]
    expected = repo / "data" if (repo / "setup.cfg").is_file() else Path.home() / ".cache" / "tinyprune"
    assert data.data_dir() == expected


@pytest.mark.data
def test_cache_file_gets_the_usual_permissions_not_the_private_ones_of_a_temporary(tmp_path):
    # Not private like the temporary file it was written through: the usual
    # 0666 less the umask, which is 0644 (everyone reads) under umask 022.
    umask = os.umask(0)
    os.umask(umask)
    ds = SyntheticVWW("train", seed=0, size=4, cache_dir=tmp_path)
    assert ds.cache_path.stat().st_mode & 0o777 == 0o666 & ~umask


# --- the figure recipes ------------------------------------------------------

_FIGURES = [synthetic._person, synthetic._clutter, *synthetic._NEAR_MISSES]


def _plan(seed):
    return synthetic._body_plan(np.random.default_rng(seed), np.zeros((2, 3)))


def _part_counts(parts):
    """How many discs, boxes and segments (capsules of non-zero length)."""
    discs = sum(p.kind == "capsule" and np.array_equal(p.points[0], p.points[1]) for p in parts)
    boxes = sum(p.kind == "box" for p in parts)
    return discs, boxes, sum(p.kind == "capsule" for p in parts) - discs


@pytest.mark.data
@pytest.mark.parametrize("figure", _FIGURES, ids=lambda f: f.__name__)
def test_every_figure_is_one_disc_one_box_and_eight_limb_segments(figure):
    # Only the arrangement may tell a person from a non-person.
    for seed in range(5):
        parts = figure(np.random.default_rng(seed), _plan(seed))
        assert _part_counts(parts) == (1, 1, 8)


@pytest.mark.data
def test_a_person_has_the_head_on_top_and_limbs_touching_the_torso():
    for seed in range(10):
        plan = _plan(seed)
        parts = synthetic._person(np.random.default_rng(seed), plan)
        up = shapes.direction(plan.tilt)
        head = next(p for p in parts if p.kind == "capsule" and np.array_equal(p.points[0], p.points[1]))
        torso = next(p for p in parts if p.kind == "box")
        assert (head.points[0] - torso.points[0]) @ up > plan.torso_half_length
        limb_roots = [p.points[0] for p in parts if p.kind == "capsule" and p is not head][::2]
        for root in limb_roots:  # every limb starts inside the torso's outline
            assert np.linalg.norm(root - torso.points[0]) < plan.torso_half_length + plan.torso_half_width


@pytest.mark.data
def test_a_misplaced_head_is_well_away_from_the_shoulders():
    for seed in range(10):
        plan = _plan(seed)
        parts = synthetic._head_misplaced(np.random.default_rng(seed), plan)
        head = parts[-1]
        right_spot = shapes.direction(plan.tilt) * (plan.torso_half_length + plan.head_radius)
        assert np.linalg.norm(head.points[0] - right_spot) > 2 * plan.head_radius


@pytest.mark.data
def test_a_person_may_leave_the_frame_at_the_sides_or_bottom_but_never_the_top():
    rng = np.random.default_rng(0)
    cut = 0
    for seed in range(300):
        figure = synthetic._person(rng, _plan(seed))
        _, (y_min, y_max, x_min, x_max) = synthetic._place(rng, figure)
        if y_max - y_min <= 96:
            assert y_min >= 0
        cut += y_max > 96 or x_min < 0 or x_max > 96
    assert 0 < cut < 150  # some, not most


@pytest.mark.data
def test_a_near_miss_stays_inside_the_frame():
    rng = np.random.default_rng(0)
    for seed in range(100):
        figure = synthetic._table(rng, _plan(seed))
        _, (y_min, y_max, x_min, x_max) = synthetic._place(rng, figure, may_leave_frame=False)
        assert y_min >= 0 and x_min >= 0 and y_max <= 96 and x_max <= 96


@pytest.mark.data
def test_part_colours_stand_out_from_the_backdrop_in_colour_and_brightness():
    rng = np.random.default_rng(0)
    backdrop = np.array([[120.0, 130.0, 110.0], [100.0, 150.0, 140.0]])
    for _ in range(50):
        colour = synthetic._part_colour(rng, backdrop)
        assert colour.dtype == np.float32
        for seen in backdrop:
            assert np.linalg.norm(colour - seen) >= 80
            assert abs(synthetic._luma(colour) - synthetic._luma(seen)) >= 50


# --- the painting kernel -----------------------------------------------------


def _painted(part, kernel=shapes.paint_pixels):
    canvas = np.zeros((3, 20, 20), np.float32)
    shapes.paint(canvas, part, kernel=kernel)
    return canvas


@pytest.mark.data
@pytest.mark.parametrize(
    "part",
    [
        shapes.disc((10.0, 10.0), 4.0, np.float32([255, 0, 0])),
        shapes.capsule((3.0, 2.0), (15.0, 17.0), 1.5, np.float32([0, 255, 0])),
        shapes.box((10.0, 9.0), 7.0, 3.0, 0.6, 1.0, np.float32([0, 0, 255])),
        shapes.ellipse((9.0, 11.0), 8.0, 3.0, 2.0, np.float32([90, 90, 90])),
    ],
    ids=["disc", "capsule", "box", "ellipse"],
)
def test_paint_kernel_plain_and_jitted_agree(part):
    plain = _painted(part, kernel=shapes._paint_pixels)
    jitted = _painted(part, kernel=shapes.paint_pixels)
    assert plain.max() > 0  # something was drawn
    np.testing.assert_allclose(plain, jitted, atol=1e-3)


@pytest.mark.data
def test_disc_covers_its_inside_fully_and_leaves_far_pixels_alone():
    canvas = _painted(shapes.disc((10.0, 10.0), 4.0, np.float32([200, 100, 50])))
    assert canvas[:, 10, 10].tolist() == [200, 100, 50]  # centre: full colour
    assert canvas[:, 10, 13].tolist() == [200, 100, 50]  # 3 px from centre: inside
    assert canvas[:, 10, 16].tolist() == [0, 0, 0]  # 6 px from centre: untouched
    assert 0 < canvas[0, 10, 14] < 200  # on the outline: anti-aliased


# --- VisualWakeWords -----------------------------------------------------------


def _fake_vww(root: Path, lines: str, images: dict, subset="train") -> Path:
    """Write <root>/<subset>.txt and the given {name: PIL image} files."""
    (root / subset).mkdir(parents=True, exist_ok=True)
    (root / f"{subset}.txt").write_text(lines)
    for name, picture in images.items():
        picture.save(root / subset / name)
    return root


def _solid(size, colour, mode="RGB"):
    return Image.new(mode, size, colour)


@pytest.mark.data
def test_vww_reads_images_and_labels_in_list_order(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    _fake_vww(
        tmp_path,
        "a.png 1\n\nb.png 0\n",
        {"a.png": Image.fromarray(pixels), "b.png": _solid((96, 96), (0, 0, 255))},
    )
    ds = VisualWakeWords(tmp_path, "train")
    assert ds.images.shape == (2, 3, 96, 96) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == [1, 0] and ds.labels.dtype == np.int64
    assert np.array_equal(ds.images[0], pixels.transpose(2, 0, 1))  # lossless, no resize
    assert ds.images[1, :, 0, 0].tolist() == [0, 0, 255]


@pytest.mark.data
def test_vww_resizes_to_96_and_converts_grey_and_rgba_to_rgb(tmp_path):
    _fake_vww(
        tmp_path,
        "grey.png 0\nrgba.png 1\n",
        {"grey.png": _solid((40, 30), 128, "L"), "rgba.png": _solid((200, 120), (10, 20, 30, 255), "RGBA")},
        subset="val",
    )
    ds = VisualWakeWords(tmp_path, "val")
    assert ds.images.shape == (2, 3, 96, 96)
    assert (ds.images[0] == 128).all()
    assert ds.images[1, :, 50, 50].tolist() == [10, 20, 30]


@pytest.mark.data
def test_vww_missing_list_file_raises_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"VisualWakeWords: list file .*val\.txt not found"):
        VisualWakeWords(tmp_path, "val")


@pytest.mark.data
def test_vww_missing_image_names_the_file_and_line(tmp_path):
    _fake_vww(tmp_path, "a.png 1\nghost.png 0\n", {"a.png": _solid((96, 96), (1, 2, 3))})
    with pytest.raises(FileNotFoundError, match=r"VisualWakeWords: image .*ghost\.png.*line 2"):
        VisualWakeWords(tmp_path)


@pytest.mark.data
def test_vww_unreadable_image_raises_value_error_naming_it(tmp_path):
    _fake_vww(tmp_path, "bad.png 1\n", {})
    (tmp_path / "train" / "bad.png").write_bytes(b"this is not a picture")
    with pytest.raises(ValueError, match=r"VisualWakeWords: cannot read image .*bad\.png.*line 1"):
        VisualWakeWords(tmp_path)


@pytest.mark.data
@pytest.mark.parametrize("line", ["a.png", "a.png 1 extra", "my picture.png 1"])
def test_vww_line_without_exactly_two_fields_names_file_and_line(tmp_path, line):
    _fake_vww(tmp_path, f"a.png 1\n\n{line}\n", {"a.png": _solid((96, 96), (1, 2, 3))})
    with pytest.raises(ValueError, match=r"VisualWakeWords: list file .*train\.txt, line 3"):
        VisualWakeWords(tmp_path)


@pytest.mark.data
@pytest.mark.parametrize("label", ["2", "-1", "yes", "1.0"])
def test_vww_label_other_than_0_or_1_names_file_and_line(tmp_path, label):
    _fake_vww(tmp_path, f"a.png {label}\n", {"a.png": _solid((96, 96), (1, 2, 3))})
    with pytest.raises(ValueError, match=r"VisualWakeWords: list file .*train\.txt, line 1: label must be 0 or 1"):
        VisualWakeWords(tmp_path)


# --- as_dataset ----------------------------------------------------------------


@pytest.mark.data
def test_as_dataset_wraps_a_pair_and_stores_int64_labels():
    images = np.zeros((3, 3, 8, 8), np.uint8)
    ds = as_dataset((images, [1.0, 0.0, True]))
    assert ds.images is images
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [1, 0, 1]
    assert len(ds) == 3


@pytest.mark.data
def test_as_dataset_returns_a_dataset_object_unchanged(tmp_path):
    ds = SyntheticVWW("val", seed=0, size=4, cache_dir=tmp_path)
    assert as_dataset(ds) is ds


@pytest.mark.data
def test_as_dataset_accepts_float_images_in_unit_range():
    ds = as_dataset((np.full((2, 3, 4, 4), 0.5, np.float64), np.array([0, 1])))
    assert ds.images.dtype == np.float64


@pytest.mark.data
@pytest.mark.parametrize(
    "images, labels, message",
    [
        (np.zeros((2, 8, 8), np.uint8), [0, 1], "rank 4"),
        (np.zeros((2, 3, 8, 8), np.uint8), [0, 1, 1], "2 images but 3 labels"),
        (np.zeros((2, 3, 8, 8), np.uint8), [[0, 1]], r"shape \(N,\)"),
        (np.zeros((2, 3, 8, 8), np.uint8), [0, 2], r"0 or 1; found \[2\]"),
        (np.full((2, 3, 8, 8), 1.5), [0, 1], r"\[0, 1\]"),
        (np.full((2, 3, 8, 8), np.nan), [0, 1], r"\[0, 1\]"),
        (np.zeros((2, 3, 8, 8), np.int32), [0, 1], "dtype int32"),
        (np.zeros((2, 3, 8, 8), np.uint8), ["a", "b"], "numbers"),
    ],
)
def test_as_dataset_rejects_bad_arrays_with_a_clear_value_error(images, labels, message):
    with pytest.raises(ValueError, match="as_dataset: .*" + message):
        as_dataset((images, labels))


@pytest.mark.data
def test_as_dataset_errors_start_with_the_callers_name():
    with pytest.raises(ValueError, match=r"^trainer: data\[0\]: 2 images but 3 labels"):
        as_dataset((np.zeros((2, 3, 8, 8), np.uint8), [0, 1, 1]), "trainer: data[0]")


@pytest.mark.data
def test_as_dataset_rejects_other_objects_with_type_error():
    with pytest.raises(TypeError, match=r"as_dataset: expected a data set with \.images .*got ndarray"):
        as_dataset(np.zeros((2, 3, 8, 8)))


# --- to_float and augment_batch -----------------------------------------------


@pytest.mark.data
def test_to_float_maps_bytes_to_unit_range_float32():
    out = to_float(np.array([0, 51, 255], np.uint8).reshape(1, 3, 1, 1))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [0.0, 0.2, 1.0], rtol=1e-6)


@pytest.mark.data
def test_to_float_passes_float_input_through():
    images = np.full((1, 3, 2, 2), 0.25, np.float32)
    assert to_float(images) is images


@pytest.mark.data
@pytest.mark.ex_data_1
def test_augment_returns_float32_batch_of_96_in_unit_range(small_train):
    out = augment_batch(small_train[0][:8], np.random.default_rng(0))
    assert out.shape == (8, 3, 96, 96) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.data
@pytest.mark.ex_data_1
def test_augment_is_deterministic_given_the_generator(small_train):
    first = augment_batch(small_train[0][:4], np.random.default_rng(7))
    second = augment_batch(small_train[0][:4], np.random.default_rng(7))
    assert np.array_equal(first, second)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_augment_changes_the_image_and_differs_between_seeds(small_train):
    images = small_train[0][:4]
    first = augment_batch(images, np.random.default_rng(1))
    second = augment_batch(images, np.random.default_rng(2))
    assert not np.allclose(first, to_float(images), atol=0.05)
    assert not np.allclose(first, second, atol=0.05)


# --- the affine map, pixel by pixel (exercise data.1) ---------------------------------


def _one_map(in_shape, out_shape, angle=0.0, shift=(0.0, 0.0), zoom=1.0, flip=False):
    """``augment._augment_matrices`` for one image, and how to call it, for messages."""
    call = (f"_augment_matrices({in_shape}, {out_shape}, angle={angle:.4g}, shift={shift}, zoom={zoom}, "
            f"flip={flip})")
    matrices = augment._augment_matrices(in_shape, out_shape, np.array([angle]), np.array([shift], dtype=float),
                                         np.array([zoom]), np.array([flip]))
    assert matrices.shape == (1, 2, 3), f"{call} has shape {matrices.shape}, expected (1, 2, 3)"
    return matrices[0], call


def _assert_samples(in_shape, out_shape, pairs, why, **transform):
    """Each output pixel of ``pairs`` samples the source pixel paired with it; ``why`` says why."""
    m, call = _one_map(in_shape, out_shape, **transform)
    for out_pixel, source in pairs:
        got = m[:, :2] @ np.array(out_pixel, dtype=float) + m[:, 2]
        assert np.allclose(got, source, atol=1e-9), \
            f"{call}: output pixel {out_pixel} samples the source at {tuple(got.round(6).tolist())}, " \
            f"expected {source}: {why}"


@pytest.mark.data
@pytest.mark.ex_data_1
def test_the_identity_map_samples_each_pixel_itself_or_the_centred_window():
    _assert_samples((5, 5), (5, 5), [((0, 0), (0, 0)), ((3, 1), (3, 1)), ((4, 4), (4, 4))],
                    "no transform: every pixel stays")
    _assert_samples((8, 6), (4, 4), [((0, 0), (2, 1)), ((3, 3), (5, 4))],
                    "no transform: the 4 x 4 output is the middle of the 8 x 6 picture, centre (3.5, 2.5) "
                    "on (1.5, 1.5)")


@pytest.mark.data
@pytest.mark.ex_data_1
def test_a_quarter_turn_takes_the_top_middle_to_the_left_middle():
    # 5 x 5, centre (2, 2).  Anticlockwise on screen: top -> left -> bottom -> right -> top.
    _assert_samples((5, 5), (5, 5), [((2, 0), (0, 2)), ((4, 2), (2, 0)), ((2, 4), (4, 2)), ((0, 2), (2, 4))],
                    "turning anticlockwise by pi/2 brings the top middle (0, 2) to the left middle (2, 0), "
                    "the left middle to the bottom middle, and so on", angle=np.pi / 2)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_a_small_turn_moves_a_pixel_right_of_the_centre_upwards():
    # 7 x 7, centre (3, 3); the source pixel (3, 5), 2 right of the centre, turns by a to
    # (3 - 2 sin a, 3 + 2 cos a): up on screen for a > 0.
    a = np.radians(10)
    _assert_samples((7, 7), (7, 7), [((3 - 2 * np.sin(a), 3 + 2 * np.cos(a)), (3, 5))],
                    "a positive angle turns anticlockwise, so what lies right of the centre moves up", angle=a)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_a_shift_is_in_output_pixels_down_and_right():
    _assert_samples((6, 6), (6, 6), [((2, 0), (0, 3)), ((5, 2), (3, 5))],
                    "shift (2, -3) moves the picture 2 pixels down and 3 left: output (i, j) shows source "
                    "(i - 2, j + 3)", shift=(2.0, -3.0))
    _assert_samples((9, 9), (9, 9), [((6, 4), (4, 4)), ((4, 4), (3, 4))],
                    "shift (2, 0) after zoom 2: the picture, twice as large, is moved by 2 output pixels, so the "
                    "centre (4, 4) shows at (6, 4), and output (4, 4) shows source (4 + (4 - 6) / 2, 4)",
                    shift=(2.0, 0.0), zoom=2.0)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_a_zoom_above_one_enlarges_about_the_centre():
    # 9 x 9, centre (4, 4): zoom 2 shows the middle half, each output pixel half as far from the centre.
    _assert_samples((9, 9), (9, 9), [((0, 8), (2, 6)), ((4, 4), (4, 4)), ((8, 2), (6, 3))],
                    "zoom 2 doubles distances from the centre, so output pixels sample half as far out", zoom=2.0)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_a_flip_mirrors_the_columns_and_keeps_the_rows():
    _assert_samples((4, 6), (4, 6), [((0, 0), (0, 5)), ((3, 1), (3, 4)), ((2, 5), (2, 0))],
                    "a left-right mirror: output (i, j) shows source (i, W - 1 - j), W = 6", flip=True)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_the_mirror_comes_before_the_turn():
    # Mirrored first, then turned anticlockwise by pi/2 (5 x 5, centre (2, 2)): the source's right middle
    # (2, 4) is mirrored to the left middle (2, 0), which the turn takes to the bottom middle (4, 2).
    _assert_samples((5, 5), (5, 5), [((4, 2), (2, 4)), ((0, 2), (2, 0))],
                    "the picture is mirrored, then turned: the right middle goes left, then down",
                    angle=np.pi / 2, flip=True)


@pytest.mark.data
@pytest.mark.ex_data_1
@pytest.mark.parametrize("seed", range(4))
def test_each_map_inverts_the_forward_transform_of_the_docstring(seed):
    # p_out = c_out + shift + zoom * R(angle) F (p_in - c_in), rows pointing down: R turns
    # anticlockwise on screen, F negates the column.  The map must take p_out back to p_in.
    rng = np.random.default_rng(seed)
    in_shape, out_shape = (int(rng.integers(5, 40)), int(rng.integers(5, 40))), (int(rng.integers(5, 30)),) * 2
    angle, shift = rng.uniform(-np.pi, np.pi), tuple(rng.uniform(-4, 4, 2).round(3).tolist())
    zoom, flip = rng.uniform(0.5, 2.0), bool(rng.integers(2))
    c_in, c_out = (np.array(in_shape) - 1) / 2, (np.array(out_shape) - 1) / 2
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mirror = np.diag([1.0, -1.0 if flip else 1.0])
    sources = rng.uniform(0, 30, (5, 2))
    outputs = [c_out + shift + zoom * turn @ mirror @ (p - c_in) for p in sources]
    _assert_samples(in_shape, out_shape, [(tuple(o.tolist()), tuple(p.tolist())) for o, p in zip(outputs, sources)],
                    "the map must undo the forward transform", angle=angle, shift=shift, zoom=zoom, flip=flip)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_a_batch_gets_one_map_per_image():
    angles, shifts = np.array([0.0, np.pi / 2, 0.3]), np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 0.5]])
    zooms, flips = np.array([1.0, 1.5, 0.8]), np.array([False, True, False])
    batch = augment._augment_matrices((10, 12), (8, 8), angles, shifts, zooms, flips)
    assert batch.shape == (3, 2, 3) and batch.dtype == np.float64, \
        f"_augment_matrices for 3 images gave {batch.dtype} of shape {batch.shape}, expected float64 (3, 2, 3)"
    for n in range(3):
        alone, call = _one_map((10, 12), (8, 8), angles[n], tuple(shifts[n]), zooms[n], bool(flips[n]))
        assert np.allclose(batch[n], alone, atol=1e-12), f"image {n} of the batch differs from {call} alone"


def _identity(n):
    """Explicit augmentation parameters that change nothing."""
    return dict(angles=np.zeros(n), shifts=np.zeros((n, 2)), zooms=np.ones(n), flips=np.zeros(n, bool))


@pytest.mark.data
@pytest.mark.ex_data_1
def test_augment_with_identity_parameters_equals_to_float(small_train):
    images = small_train[0][:3]
    out = augment._augment_with(images, **_identity(3))
    np.testing.assert_allclose(out, to_float(images), atol=1e-6)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_flip_alone_mirrors_left_right(small_train):
    images = small_train[0][:3]
    params = _identity(3)
    params["flips"] = np.array([True, False, True])
    out = augment._augment_with(images, **params)
    np.testing.assert_allclose(out[0], to_float(images[0, :, :, ::-1]), atol=1e-6)
    np.testing.assert_allclose(out[1], to_float(images[1]), atol=1e-6)
    np.testing.assert_allclose(out[2], to_float(images[2, :, :, ::-1]), atol=1e-6)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_whole_pixel_shift_moves_the_picture_and_repeats_the_edge():
    image = np.arange(3 * 96 * 96, dtype=np.float64).reshape(1, 3, 96, 96) / (3 * 96 * 96)
    params = _identity(1)
    params["shifts"] = np.array([[0.0, 5.0]])  # 5 pixels to the right
    out = augment._augment_with(image, **params)
    np.testing.assert_allclose(out[0, :, :, 5:], image[0, :, :, :-5], atol=1e-6)
    np.testing.assert_allclose(out[0, :, :, :5], np.repeat(image[0, :, :, :1], 5, axis=2), atol=1e-6)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_quarter_turn_rotates_anticlockwise():
    image = np.zeros((1, 1, 96, 96), np.uint8)
    image[0, 0, 10, 48] = 255  # a dot near the top edge, in the middle
    params = _identity(1)
    params["angles"] = np.array([np.pi / 2])
    out = augment._augment_with(image, **params)
    # Anticlockwise on screen takes the top middle to the left middle.
    assert np.unravel_index(out[0, 0].argmax(), (96, 96)) == (47, 10)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_larger_images_are_centre_cropped_to_96():
    image = np.random.default_rng(0).integers(0, 256, (1, 3, 128, 128), dtype=np.uint8)
    out = augment._augment_with(image, **_identity(1))
    np.testing.assert_allclose(out[0], to_float(image[0, :, 16:112, 16:112]), atol=1e-6)


@pytest.mark.data
@pytest.mark.ex_data_1
def test_warp_kernel_plain_and_jitted_agree():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 12, 12), dtype=np.uint8)
    params = dict(
        angles=np.radians([8.0, -5.0]), shifts=np.array([[0.4, -0.3], [1.0, 0.2]]),
        zooms=np.array([1.08, 0.93]), flips=np.array([True, False]),
    )
    plain = augment._augment_with(images, **params, out_size=10, kernel=augment._warp_bilinear)
    jitted = augment._augment_with(images, **params, out_size=10, kernel=augment.warp_bilinear)
    np.testing.assert_allclose(plain, jitted, atol=1e-6)
    assert plain.std() > 0.05  # a real picture came out, not a constant


@pytest.mark.data
@pytest.mark.ex_data_1
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), low=st.integers(0, 255), high=st.integers(0, 255))
def test_augment_never_leaves_the_input_range(seed, low, high):
    low, high = min(low, high), max(low, high)
    rng = np.random.default_rng(seed)
    images = rng.integers(low, high + 1, (2, 3, 96, 96), dtype=np.uint8)
    out = augment_batch(images, rng)
    assert out.min() >= low / 255 - 1e-6 and out.max() <= high / 255 + 1e-6


# --- DataLoader ------------------------------------------------------------------


def _numbered(n):
    """n tiny images whose pixels hold their own index, labels index % 2."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 3, 96, 96)).copy()
    return images, np.arange(n) % 2


def _order(batches):
    """The image indices an epoch visited, in order."""
    return [int(i) for x, _ in batches for i in np.rint(x[:, 0, 0, 0] * 255)]


@pytest.mark.data
@pytest.mark.parametrize("drop_last, batches, last", [(False, 3, 6), (True, 2, 32)])
def test_loader_length_and_final_batch(drop_last, batches, last):
    loader = DataLoader(_numbered(70), batch_size=32, drop_last=drop_last)
    epoch = list(loader)
    assert len(loader) == batches == len(epoch)
    assert epoch[-1][0].shape == (last, 3, 96, 96)


@pytest.mark.data
def test_loader_yields_float32_images_and_float32_labels_that_match():
    images, labels = _numbered(10)
    for x, y in DataLoader((images, labels), batch_size=4):
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert y.shape == (len(x),)
        indices = np.rint(x[:, 0, 0, 0] * 255).astype(int)
        assert np.array_equal(y, labels[indices])


@pytest.mark.data
def test_loader_visits_every_image_once_per_epoch():
    loader = DataLoader(_numbered(50), batch_size=8)
    assert sorted(_order(loader)) == list(range(50))


@pytest.mark.data
def test_loader_shuffles_differently_each_epoch():
    loader = DataLoader(_numbered(50), batch_size=8, seed=0)
    first, second = _order(loader), _order(loader)
    assert first != second and first != list(range(50))


@pytest.mark.data
def test_loader_with_the_same_seed_repeats_the_same_epochs():
    a = DataLoader(_numbered(50), batch_size=8, seed=3)
    b = DataLoader(_numbered(50), batch_size=8, seed=3)
    assert [_order(a) for _ in range(3)] == [_order(b) for _ in range(3)]
    c = DataLoader(_numbered(50), batch_size=8, seed=4)
    assert _order(c) != _order(DataLoader(_numbered(50), batch_size=8, seed=3))


@pytest.mark.data
def test_loader_epoch_can_be_set_to_resume():
    a = DataLoader(_numbered(50), batch_size=8, seed=0)
    _order(a)
    second_epoch = _order(a)
    b = DataLoader(_numbered(50), batch_size=8, seed=0)
    b.epoch = 1
    assert _order(b) == second_epoch


@pytest.mark.data
def test_loader_without_shuffle_keeps_stored_order():
    assert _order(DataLoader(_numbered(20), batch_size=6, shuffle=False)) == list(range(20))


@pytest.mark.data
@pytest.mark.ex_data_1
def test_loader_augmentation_is_deterministic_and_changes_per_epoch(small_train):
    subset = (small_train[0][:8], small_train[1][:8])
    a = DataLoader(subset, batch_size=8, shuffle=False, seed=0, augment=True)
    b = DataLoader(subset, batch_size=8, shuffle=False, seed=0, augment=True)
    (xa1, _), (xa2, _), (xb1, _) = next(iter(a)), next(iter(a)), next(iter(b))
    assert np.array_equal(xa1, xb1)
    assert not np.array_equal(xa1, xa2)
    assert not np.allclose(xa1, to_float(subset[0]), atol=0.05)


@pytest.mark.data
def test_loader_rejects_a_batch_size_below_one():
    with pytest.raises(ValueError, match="DataLoader: batch_size must be an integer >= 1, got 0"):
        DataLoader(_numbered(4), batch_size=0)


@pytest.mark.data
def test_loader_rejects_a_negative_seed_before_the_first_epoch():
    with pytest.raises(ValueError, match="DataLoader: seed must be an integer >= 0, got -1"):
        DataLoader(_numbered(4), seed=-1)


@pytest.mark.data
def test_loader_errors_about_the_data_name_the_loader():
    with pytest.raises(ValueError, match="DataLoader: images must have rank 4"):
        DataLoader((np.zeros((2, 8, 8), np.uint8), [0, 1]))


@pytest.mark.data
def test_augment_rejects_images_without_rank_4():
    with pytest.raises(ValueError, match=r"augment_batch: images must have rank 4.*\(3, 96, 96\)"):
        augment_batch(np.zeros((3, 96, 96), np.uint8), np.random.default_rng(0))


@pytest.mark.data
@pytest.mark.ex_data_1
def test_augmentation_keeps_pictures_smaller_than_96_at_their_size():
    # Training sees what validation sees: 32 x 32 digits stay 32 x 32, 8 x 20 becomes 8 x 8.
    rng = np.random.default_rng(0)
    assert augment_batch(np.zeros((2, 3, 32, 32), np.uint8), rng).shape == (2, 3, 32, 32)
    assert augment_batch(np.zeros((1, 3, 8, 20), np.uint8), rng).shape == (1, 3, 8, 8)
    assert augment_batch(np.zeros((1, 3, 128, 100), np.uint8), rng).shape == (1, 3, 96, 96)
