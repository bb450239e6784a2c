"""Small generic helpers with no domain of their own: progress lines, JSON safety, hashing, device.

Nothing here imports the rest of the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def progress(message: str) -> None:
    """A progress line on stderr, never stdout (stdout is for --json)."""
    print(message, file=sys.stderr, flush=True)


def json_safe(obj: Any) -> Any:
    """NaN -> None, tuples -> lists, recursively: JSON has no NaN, and a metric may be undefined."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (checkpoints, feature caches)."""
    return file_digest(path, "sha256")


def file_md5(path: str | Path) -> str:
    """md5 of a file, as DVC records it for a single-file output (the data version)."""
    return file_digest(path, "md5")


def device() -> torch.device:
    """CUDA when present, else CPU."""
    import torch  # here, not at the top: `lau --help` and bad input never pay torch's import

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` PyTorch CPU threads, then restore the previous setting."""
    import torch  # see device()

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
