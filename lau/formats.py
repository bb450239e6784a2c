"""The on-disk formats the dataset loaders read (IDX, CIFAR-10 binary and python batches, a
package's bundled files) and the resize every loader shares; nothing here downloads."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from lau.errors import BadInput


def package_file(package: str, relative: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"package '{package}' is not installed; run `make test` or `pip install -e .`")
    return Path(list(spec.submodule_search_locations)[0]) / relative


def require_root(root: str, name: str) -> Path:
    if not root:
        raise BadInput(f"{name}: set data.root to the dataset folder")
    base = Path(root)
    if not base.is_dir():
        raise BadInput(f"{name}: data folder not found: {base}")
    return base


def idx_path(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise BadInput(f"fashion_mnist: missing {stem}[.gz] in {folder}")


def read_idx(path: Path) -> np.ndarray:
    """IDX file (MNIST family): big-endian magic, dims, then uint8 data."""
    data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise BadInput(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise BadInput(f"{path}: truncated IDX file")
    return body.reshape(dims)


def read_cifar_bin(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    files = [folder / f"data_batch_{i}.bin" for i in range(1, 6)] + [folder / "test_batch.bin"]
    records = []
    for path in files:
        if not path.is_file():
            raise BadInput(f"cifar10: missing {path}")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % 3073:
            raise BadInput(f"cifar10: {path} is truncated")
        records.append(raw.reshape(-1, 3073))
    table = np.concatenate(records)
    images = torch.from_numpy(table[:, 1:].copy()).reshape(-1, 3, 32, 32)
    return images, torch.from_numpy(table[:, 0].astype(np.int64))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR's python batches: numpy arrays and builtins only, nothing executable."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_py(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        path = folder / name
        if not path.is_file():
            raise BadInput(f"cifar10: missing {path}")
        try:
            with open(path, "rb") as handle:
                batch = _ArrayUnpickler(handle, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise BadInput(f"cifar10: {path} is not a CIFAR batch ({err})") from None
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def resize(images: torch.Tensor, image_size: int) -> torch.Tensor:
    if not image_size or image_size == images.shape[-1]:
        return images
    resized = torch.nn.functional.interpolate(images.float(), size=(image_size, image_size),
                                              mode="bilinear", align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)
