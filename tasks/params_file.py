"""Edits of params.yaml that the flows make: the forgotten classes leave the training data."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from ruamel.yaml import YAML

from lau.config import load_params
from tasks.common import MATH


@task(name="exclude forgotten classes from the training data", **MATH)
def exclude_classes(params_path: Path, classes: tuple[int, ...]) -> list[int]:
    """Add ``classes`` to ``data.excluded_classes`` (comments and layout kept), so the next
    `lau train` or `dvc repro` trains without them. Idempotent; returns the new list."""
    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(Path(params_path).read_text())
    current = [int(c) for c in (doc["data"].get("excluded_classes") or [])]
    merged = sorted(set(current) | set(classes))
    if merged != current:
        seq = doc["data"]["excluded_classes"]
        seq.clear()
        seq.extend(merged)
        seq.fa.set_flow_style()
        tmp = Path(f"{params_path}.tmp")
        with open(tmp, "w") as handle:
            yaml.dump(doc, handle)
        load_params(tmp)  # never leave a params file the pipeline cannot read
        tmp.replace(params_path)
    return merged
