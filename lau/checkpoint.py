"""The model owns its serialization: safetensors weights + a JSON config, no pickle anywhere.

A checkpoint is a folder with ``model.safetensors`` and ``config.json``; the config records the
weights' sha256, which ``load_checkpoint`` verifies, so a tampered file is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lau.adopt import build_from_spec
from lau.errors import BadInput
from lau.models import ModelSpec, SplitModel, build_model
from lau.utils import file_sha256
from lau.zoo import is_adopted_arch

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "lau-checkpoint/1"


def state_tensors(model: SplitModel) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, as safetensors stores them."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def weights_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order: stable across runs."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(model: SplitModel, folder: str | Path, *, depth: int = 1,
                    metadata: dict | None = None) -> Path:
    """Write weights and config into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = state_tensors(model)
    save_file(tensors, str(folder / WEIGHTS))
    canonical_safetensors(folder / WEIGHTS)
    config = {"format": FORMAT, "spec": model.spec.to_json(), "depth": depth,
              "weights_sha256": file_sha256(folder / WEIGHTS), "metadata": metadata or {}}
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder


def load_checkpoint(folder: str | Path) -> tuple[SplitModel, dict]:
    """Rebuild a model from a checkpoint folder; returns (model in eval mode, config dict).

    An adopted model (arch ``torchvision:...``/``timm:...``) is rebuilt by lau.adopt from the
    builder, head and preprocessing in its spec; its weights file holds the team's own keys."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG, folder / WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise BadInput(f"checkpoint {folder} is incomplete: needs {WEIGHTS} and {CONFIG}")
    try:
        config = json.loads(config_path.read_text())
        spec = ModelSpec.from_json(config["spec"])
    except (ValueError, KeyError, TypeError) as err:
        raise BadInput(f"checkpoint {folder}: unreadable {CONFIG} ({err})") from None
    if config.get("format") != FORMAT:
        raise BadInput(f"checkpoint {folder}: unknown format {config.get('format')!r}")
    expected = config.get("weights_sha256")
    if expected and file_sha256(weights_path) != expected:
        raise BadInput(f"checkpoint {folder}: weights do not match their recorded sha256 (tampered?)")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise BadInput(f"checkpoint {folder}: {WEIGHTS} is not a safetensors file ({err})") from None
    model = build_from_spec(spec) if is_adopted_arch(spec.arch) else build_model(spec)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise BadInput(f"checkpoint {folder}: weights do not fit {spec.arch} "
                       f"({str(err).splitlines()[0]})") from None
    model.eval()
    return model, config


def canonical_safetensors(path: str | Path) -> Path:
    """Rewrite a safetensors header with sorted keys, so that equal contents give equal bytes.

    safetensors writes its string metadata in hash-map order, which changes from process to
    process: the same split would otherwise get a new md5 (data version, cache key) on every run.
    """
    path = Path(path)
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes with spaces
        if len(text) == size:  # the usual case: rewrite the header in place, not the whole file
            handle.seek(8)
            handle.write(text)
            return path
        data = handle.read()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path
