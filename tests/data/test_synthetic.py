"""The generated datasets (lau/synthetic.py): RGB, the promised class counts and imbalance,
bit-for-bit deterministic, registered by name, split like any other dataset."""

from __future__ import annotations

import torch

from lau.config import DataConfig
from lau.data import DATASETS, load_dataset, prepare
from lau.synthetic import GLYPH_NAMES, SHAPE_NAMES, glyph_counts, render_glyphs, render_shapes


def test_shapes_are_24_rgb_classes_of_200_24x24_images() -> None:
    raw = load_dataset("synth_shapes")
    assert raw.images.shape == (24 * 200, 3, 24, 24) and raw.images.dtype == torch.uint8
    assert torch.bincount(raw.labels).tolist() == [200] * 24
    assert raw.class_names == SHAPE_NAMES and len(set(SHAPE_NAMES)) == 24
    # colour varies: the channels of one image are not copies of each other
    assert (raw.images[:, 0].float() - raw.images[:, 1].float()).abs().mean() > 20


def test_generation_is_deterministic_and_seeded() -> None:
    first, again = render_shapes(per_class=4), render_shapes(per_class=4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    other = render_shapes(per_class=4, seed=1)
    assert not torch.equal(first[0], other[0])
    glyphs, glyphs_again = render_glyphs(largest=6), render_glyphs(largest=6)
    assert torch.equal(glyphs[0], glyphs_again[0]) and torch.equal(glyphs[1], glyphs_again[1])


def test_glyphs_are_26_imbalanced_rgb_classes() -> None:
    counts = glyph_counts(len(GLYPH_NAMES))
    assert len(counts) == 26 and max(counts) == 300 and min(counts) == 50
    assert len(set(counts)) > 20, "every class its own size, not two blocks"
    images, labels, names = render_glyphs(largest=12)
    assert names == GLYPH_NAMES and images.shape[1:] == (3, 24, 24)
    assert torch.bincount(labels, minlength=26).tolist() == glyph_counts(26, largest=12)


def test_images_are_rendered_at_the_size_asked_for() -> None:
    images, _, _ = render_shapes(image_size=32, per_class=2)
    assert images.shape == (48, 3, 32, 32)


def test_generated_datasets_are_registered_and_split_stratified() -> None:
    assert {"synth_shapes", "synth_glyphs"} <= set(DATASETS)
    split = prepare(DataConfig(dataset="synth_shapes", max_per_class=20))
    assert split.image_size == 24
    assert split.num_classes == 24 and split.in_channels == 3
    for part, per_class in (("train", 14), ("val", 2), ("test", 4)):
        assert torch.bincount(getattr(split, f"{part}_labels"), minlength=24).tolist() == [per_class] * 24, part
