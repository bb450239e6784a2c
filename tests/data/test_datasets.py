"""Datasets: bundled ones load, on-disk formats (written here) load, the split is deterministic and
stratified, class lists are validated, and nothing is unpickled beyond plain arrays."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lau.config import DataConfig
from lau.data import (
    CIFAR_NAMES,
    FASHION_NAMES,
    check_classes,
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_imagefolder,
    load_mnist5k,
    load_split,
    prepare,
    save_split,
)
from lau.errors import BadInput

# ------------------------------------------------------------------ bundled datasets


def test_mnist5k_is_5000_images_500_per_class() -> None:
    raw = load_mnist5k()
    assert raw.images.shape == (5000, 1, 28, 28) and raw.images.dtype == torch.uint8
    assert raw.labels.dtype == torch.int64
    assert torch.bincount(raw.labels).tolist() == [500] * 10
    assert raw.images.max() > 200 and raw.images.float().mean() < 80  # white digits on black
    assert raw.class_names == tuple(str(i) for i in range(10))


def test_digits_loads_and_resizes() -> None:
    raw = load_digits()
    assert raw.images.shape == (1797, 1, 8, 8) and raw.images.dtype == torch.uint8
    assert set(raw.labels.tolist()) == set(range(10))
    assert raw.images.max() == 255
    assert load_digits(image_size=16).images.shape == (1797, 1, 16, 16)


def test_unknown_dataset_lists_the_valid_ones() -> None:
    with pytest.raises(BadInput, match="mnist5k.*digits"):
        load_dataset("imagenet")


# ------------------------------------------------------------------ the split


def test_prepare_is_deterministic_per_seed() -> None:
    cfg = DataConfig(dataset="digits", max_per_class=60)
    first, again = prepare(cfg), prepare(cfg)
    for name in ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    other = prepare(DataConfig(dataset="digits", max_per_class=60, seed=1))
    assert not torch.equal(first.test_images, other.test_images)
    assert not torch.equal(first.val_images, other.val_images)
    assert torch.equal(torch.bincount(first.test_labels), torch.bincount(other.test_labels))
    assert torch.equal(torch.bincount(first.val_labels), torch.bincount(other.val_labels))


@pytest.mark.parametrize(("test_fraction", "val_fraction"), [(0.2, 0.1), (0.35, 0.2)])
def test_prepare_is_stratified_into_train_val_test(test_fraction: float, val_fraction: float) -> None:
    split = prepare(DataConfig(dataset="digits", test_fraction=test_fraction, val_fraction=val_fraction))
    raw_counts = torch.bincount(load_digits().labels)
    counts = {part: torch.bincount(getattr(split, f"{part}_labels"), minlength=10)
              for part in ("train", "val", "test")}
    assert torch.equal(counts["train"] + counts["val"] + counts["test"], raw_counts)  # nothing lost or duplicated
    for part, fraction in (("test", test_fraction), ("val", val_fraction)):
        share = counts[part].float() / raw_counts.float()
        assert torch.all((share - fraction).abs() <= 1.0 / raw_counts.float() + 1e-6), (part, share.tolist())


def test_validation_is_taken_after_test_so_the_test_images_stay_put() -> None:
    """Adding a validation split takes its images from train: the test split a gate judged on before
    is the same set of images."""
    with_val = prepare(DataConfig(dataset="digits", val_fraction=0.15))
    without_val = prepare(DataConfig(dataset="digits", val_fraction=0.0))
    assert torch.equal(with_val.test_images, without_val.test_images)
    assert len(without_val.val_labels) == 0
    assert len(with_val.train_labels) + len(with_val.val_labels) == len(without_val.train_labels)


def test_prepare_caps_images_per_class_and_keeps_train_val_test_disjoint() -> None:
    split = prepare(DataConfig(dataset="mnist5k", max_per_class=40))
    counts = sum(torch.bincount(getattr(split, f"{part}_labels"), minlength=10) for part in ("train", "val", "test"))
    assert counts.tolist() == [40] * 10
    assert torch.bincount(split.val_labels, minlength=10).tolist() == [4] * 10
    seen: set = set()
    for part in ("train", "val", "test"):
        images = {tuple(img.flatten().tolist()) for img in getattr(split, f"{part}_images")}
        assert not images & seen, f"{part} shares images with an earlier part"
        seen |= images


def test_a_tiny_class_keeps_a_training_image() -> None:
    """Three images of a class: one each for train, validation and test; two: train and test."""
    split = prepare(DataConfig(dataset="digits", max_per_class=3))
    for part in ("train", "val", "test"):
        assert torch.bincount(getattr(split, f"{part}_labels"), minlength=10).tolist() == [1] * 10, part
    split = prepare(DataConfig(dataset="digits", max_per_class=2))
    assert torch.bincount(split.train_labels, minlength=10).tolist() == [1] * 10
    assert len(split.val_labels) == 0


@pytest.mark.parametrize(("test_fraction", "val_fraction", "says"),
                         [(0.5, 0.5, "must leave images to train on"), (0.2, 1.0, "data.val_fraction"),
                          (0.2, -0.1, "data.val_fraction")])
def test_fractions_that_leave_no_training_data_are_bad_input(tmp_path: Path, test_fraction: float,
                                                              val_fraction: float, says: str) -> None:
    from lau.config import load_params

    path = tmp_path / "params.yaml"
    path.write_text(f"data:\n  test_fraction: {test_fraction}\n  val_fraction: {val_fraction}\n")
    with pytest.raises(BadInput, match=says):
        load_params(path)


def test_excluded_classes_leave_train_val_and_test() -> None:
    split = prepare(DataConfig(dataset="digits", excluded_classes=(3, 7)))
    for labels in (split.train_labels, split.val_labels, split.test_labels):
        assert not torch.isin(labels, torch.tensor([3, 7])).any()
        assert set(labels.tolist()) == set(range(10)) - {3, 7}
    assert split.num_classes == 10  # the label space stays: class ids keep their meaning
    assert split.excluded_classes == (3, 7)


def test_excluding_an_unknown_class_is_bad_input() -> None:
    with pytest.raises(BadInput, match="0-9"):
        prepare(DataConfig(dataset="digits", excluded_classes=(12,)))


def test_split_round_trips_through_safetensors(tmp_path: Path) -> None:
    split = prepare(DataConfig(dataset="digits", max_per_class=20, excluded_classes=(5,)))
    save_split(split, tmp_path / "split.safetensors")
    loaded = load_split(tmp_path / "split.safetensors")
    for name in ("train_images", "val_images", "val_labels", "test_labels"):
        assert torch.equal(getattr(loaded, name), getattr(split, name)), name
    assert (loaded.class_names, loaded.excluded_classes, loaded.dataset) == (
        split.class_names, split.excluded_classes, split.dataset)


def test_a_split_written_without_validation_is_refused(tmp_path: Path) -> None:
    """A prepared file from before the validation split: one clear line, not a silent empty val."""
    from safetensors.torch import save_file

    split = prepare(DataConfig(dataset="digits", max_per_class=10))
    save_file({"train_images": split.train_images, "train_labels": split.train_labels,
               "test_images": split.test_images, "test_labels": split.test_labels},
              str(tmp_path / "old.safetensors"), {"dataset": "digits", "class_names": "[]"})
    with pytest.raises(BadInput, match="no validation split"):
        load_split(tmp_path / "old.safetensors")


# ------------------------------------------------------------------ class lists


@pytest.mark.parametrize("classes", [[10], [-1], [3, 3], [], list(range(10))],
                         ids=["unknown", "negative", "duplicate", "empty", "every-class"])
def test_check_classes_rejects_with_valid_ids(classes: list[int]) -> None:
    with pytest.raises(BadInput, match="0-9"):
        check_classes(classes, 10)


def test_check_classes_accepts_and_sorts() -> None:
    assert check_classes([5, 3], 10) == (3, 5)
    assert check_classes(list(range(9)), 10) == tuple(range(9))


def test_check_classes_with_exclusions() -> None:
    with pytest.raises(BadInput, match="already excluded"):
        check_classes([3], 10, excluded=[3])
    with pytest.raises(BadInput, match="no class to keep"):
        check_classes([1, 2], 3, excluded=[0])


# ------------------------------------------------------------------ CIFAR-10


CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_records(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def test_cifar10_binary_format(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected_images, expected_labels = [], []
    for i, name in enumerate(CIFAR_FILES):
        pixels, labels = cifar_records(i, 3)
        table = np.concatenate([labels[:, None].astype(np.uint8), pixels], axis=1)  # label byte, 3072 pixels
        (folder / f"{name}.bin").write_bytes(table.tobytes())
        expected_images.append(pixels)
        expected_labels.append(labels)
    raw = load_dataset("cifar10", str(tmp_path))
    assert raw.images.shape == (18, 3, 32, 32) and raw.images.dtype == torch.uint8
    assert raw.labels.tolist() == np.concatenate(expected_labels).tolist()
    first = expected_images[0][0]
    assert raw.images[0, 0, 0, :4].tolist() == first[:4].tolist()  # red plane, row 0
    assert raw.images[0, 2, 31, 31].item() == first[3071]  # blue plane, last pixel
    assert raw.class_names == CIFAR_NAMES


def test_cifar10_binary_truncated_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in CIFAR_FILES:
        (folder / f"{name}.bin").write_bytes(bytes(3073 * 2 - 5))
    with pytest.raises(BadInput, match="truncated"):
        load_cifar10(str(tmp_path))


def write_cifar_py(folder: Path, batch_for: dict[str, object] | None = None) -> list[np.ndarray]:
    folder.mkdir()
    labels_all = []
    for i, name in enumerate(CIFAR_FILES):
        pixels, labels = cifar_records(100 + i, 4)
        batch = {"batch_label": f"batch {i}", "labels": labels.tolist(), "data": pixels,
                 "filenames": [f"img_{j}.png" for j in range(4)]}
        if batch_for and name in batch_for:
            batch = batch_for[name]
        # The real files (Python 2, protocol 2) name only numpy's _reconstruct, ndarray and dtype
        # as globals; Python 3's protocol 4 pickles of numpy arrays name the same three.
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
        labels_all.append(labels)
    return labels_all


def test_cifar10_python_format(tmp_path: Path) -> None:
    labels = write_cifar_py(tmp_path / "cifar-10-batches-py")
    raw = load_cifar10(str(tmp_path))
    assert raw.images.shape == (24, 3, 32, 32) and raw.images.dtype == torch.uint8
    assert raw.labels.tolist() == np.concatenate(labels).tolist()
    assert raw.images[0].flatten().tolist() == cifar_records(100, 4)[0][0].tolist()


class RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_cifar10_pickle_with_a_malicious_global_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = {"data": RunsCommand(f"touch {marker}"), "labels": [0]}
    write_cifar_py(tmp_path / "cifar-10-batches-py", {"data_batch_2": evil})
    with pytest.raises(BadInput, match="system"):
        load_cifar10(str(tmp_path))
    assert not marker.exists()


def test_cifar10_without_batches_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cifar-10-batches"):
        load_cifar10(str(tmp_path))


# ------------------------------------------------------------------ Fashion-MNIST (IDX)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_fashion_mnist_idx_gz(tmp_path: Path) -> None:
    raw_dir = tmp_path / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    parts = {"train": 5, "t10k": 3}
    expected_labels, expected_images = [], []
    for part, n in parts.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        with gzip.open(raw_dir / f"{part}-images-idx3-ubyte.gz", "wb") as handle:
            handle.write(idx_bytes(images))
        with gzip.open(raw_dir / f"{part}-labels-idx1-ubyte.gz", "wb") as handle:
            handle.write(idx_bytes(labels))
        expected_labels += labels.tolist()
        expected_images.append(images)
    raw = load_fashion_mnist(str(tmp_path))
    assert raw.images.shape == (8, 1, 28, 28)
    assert raw.labels.tolist() == expected_labels
    assert torch.equal(raw.images[:, 0], torch.from_numpy(np.concatenate(expected_images)))
    assert raw.class_names == FASHION_NAMES


def test_fashion_mnist_missing_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((1, 28, 28))))
    with pytest.raises(BadInput, match="train-labels-idx1-ubyte"):
        load_fashion_mnist(str(tmp_path))


# ------------------------------------------------------------------ image folders


def test_imagefolder_class_names_are_folder_names(tmp_path: Path) -> None:
    from PIL import Image

    shades = {"carol": 200, "alice": 20, "bob": 110}  # created out of order: classes sort by name
    for name, shade in shades.items():
        (tmp_path / name).mkdir()
        for j in range(2):
            Image.fromarray(np.full((6, 6), shade + j, dtype=np.uint8), mode="L").save(tmp_path / name / f"{j}.png")
    (tmp_path / "alice" / "notes.txt").write_text("not an image")
    raw = load_imagefolder(str(tmp_path))
    assert raw.class_names == ("alice", "bob", "carol")
    assert raw.images.shape == (6, 1, 6, 6)
    assert raw.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert raw.images[:, 0, 0, 0].tolist() == [20, 21, 110, 111, 200, 201]
    assert load_imagefolder(str(tmp_path), image_size=4).images.shape == (6, 1, 4, 4)


def test_imagefolder_rgb(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (5, 5), (255, 0, 0) if name == "a" else (0, 0, 255)).save(tmp_path / name / "x.png")
    raw = load_imagefolder(str(tmp_path))
    assert raw.images.shape == (2, 3, 5, 5)
    assert raw.images[0, :, 0, 0].tolist() == [255, 0, 0] and raw.images[1, :, 0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize("loader", [load_imagefolder, load_cifar10, load_fashion_mnist])
def test_missing_root_folder_is_bad_input(loader, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        loader(str(tmp_path / "missing"))
    with pytest.raises(BadInput, match="data.root"):
        loader("")
