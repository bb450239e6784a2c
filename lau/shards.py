"""Feature extraction in shards: which index ranges, and how their features join up again.

``lau.features.extract`` runs over a set of images in batches of ``batch_size`` starting at 0. A shard
is a contiguous range of one set (train or test) whose bounds fall on those batch boundaries, so
every image is pushed through the network in the very same batch as in a single-process run, and
the shards, concatenated in order, are bit for bit the single-process features.

A shard folder holds what every shard reads (``inputs/model``: a checkpoint, ``inputs/images``: the
split's uint8 images) and one ``<shard>.safetensors`` per finished shard, so that only paths travel
to the processes (or machines) that run the shards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lau.checkpoint import load_checkpoint, save_checkpoint
from lau.errors import BadInput
from lau.features import extract
from lau.models import SplitModel

PARTS = ("train", "test", "val")  # the image sets of a split, in the order FeatureSet holds them
MODEL_DIR = "inputs/model"
IMAGES_FILE = "inputs/images.safetensors"


@dataclass(frozen=True, order=True)
class Shard:
    """Images ``start:stop`` of the ``part`` set (train or test)."""

    part: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        """A file-name-safe id that sorts in index order: ``train-00000000-00001024``."""
        return f"{self.part}-{self.start:08d}-{self.stop:08d}"

    def __str__(self) -> str:
        return f"{self.part}[{self.start}:{self.stop}]"


def aligned_shard_size(shard_size: int, batch_size: int) -> int:
    """``shard_size`` rounded up to a whole number of extraction batches (at least one)."""
    if shard_size <= 0 or batch_size <= 0:
        raise BadInput(f"shard size and batch size must be > 0, got {shard_size} and {batch_size}")
    batches = -(-shard_size // batch_size)  # ceil
    return batches * batch_size


def shard_ranges(count: int, shard_size: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(count)`` in order, each bound on a batch boundary."""
    if count < 0:
        raise BadInput(f"image count must be >= 0, got {count}")
    step = aligned_shard_size(shard_size, batch_size)
    return [(start, min(start + step, count)) for start in range(0, count, step)]


def plan_shards(counts: Mapping[str, int], shard_size: int, batch_size: int) -> list[Shard]:
    """Every shard of every part (train first, then test), in merge order."""
    unknown = set(counts) - set(PARTS)
    if unknown:
        raise BadInput(f"unknown image sets {sorted(unknown)}; expected {list(PARTS)}")
    return [Shard(part, start, stop) for part in PARTS if part in counts
            for start, stop in shard_ranges(counts[part], shard_size, batch_size)]


def merge(shards: Sequence[Shard], features: Sequence[torch.Tensor], part: str, count: int) -> torch.Tensor:
    """The ``part`` set's features: its shards' features concatenated in index order.

    Fails loudly when the shards of ``part`` do not tile ``range(count)`` exactly or a shard's
    features have the wrong number of rows; an empty set gives ``torch.empty(0)`` like ``extract``.
    """
    if len(shards) != len(features):
        raise BadInput(f"{len(shards)} shards but {len(features)} feature tensors")
    pieces = sorted(((s, f) for s, f in zip(shards, features, strict=True) if s.part == part),
                    key=lambda pair: pair[0])
    expected = 0
    for shard, tensor in pieces:
        if shard.start != expected:
            raise BadInput(f"shards of {part} leave a gap or overlap at image {expected} (next is {shard})")
        if tensor.shape[0] != shard.size:
            raise BadInput(f"shard {shard} holds {tensor.shape[0]} rows, expected {shard.size}")
        expected = shard.stop
    if expected != count:
        raise BadInput(f"shards of {part} cover {expected} of {count} images")
    return torch.cat([tensor for _, tensor in pieces]) if pieces else torch.empty(0)


def write_inputs(model: SplitModel, images: Mapping[str, torch.Tensor], depth: int, folder: str | Path) -> None:
    """Write what every shard of ``folder`` reads: the model's checkpoint and the images of each part."""
    folder = Path(folder)
    save_checkpoint(model, folder / MODEL_DIR, depth=depth)
    save_file({f"{part}_images": tensor.contiguous() for part, tensor in images.items()}, str(folder / IMAGES_FILE))


def extract_shard_file(shard: Shard, folder: str | Path, depth: int, batch_size: int, threads: int) -> Path:
    """F_f of one shard's images, with ``threads`` torch threads, into ``folder/<shard>.safetensors``.

    The thread count is part of the result: MKL's matrix products round differently with another
    count, so a shard reproduces a single-process run only with that process's count.
    """
    folder = Path(folder)
    torch.set_num_threads(threads)
    model, _ = load_checkpoint(folder / MODEL_DIR)
    with safe_open(str(folder / IMAGES_FILE), "pt") as handle:
        images = handle.get_slice(f"{shard.part}_images")[shard.start:shard.stop]  # (B, C, H, W) uint8
    features = extract(model, images, depth, batch_size, label=f"features {shard}")
    path = folder / f"{shard.name}.safetensors"
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    save_file({"features": features.contiguous()}, str(partial))
    os.replace(partial, path)  # a reader never sees half a shard
    return path


def read_shard_file(path: str | Path) -> torch.Tensor:
    """The features a shard wrote."""
    return load_file(str(path))["features"]
