"""Edits of params.yaml that the flows make: the forgotten classes leave the training data."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from prefect import task
from ruamel.yaml import YAML

from lau.config import load_params
from tasks.common import MATH


@task(name="exclude forgotten classes from the training data", **MATH)
def exclude_classes(params_path: Path, classes: tuple[int, ...]) -> list[int]:
    """Add ``classes`` to ``data.excluded_classes`` (comments and layout kept), so the next
    `lau train` or `dvc repro` trains without them. Idempotent; returns the new list.

    Deletions of other models may share the file and run at the same time: the read-modify-write
    holds an exclusive lock on it, so no class is lost and no writer sees another's half-written copy."""
    yaml = YAML()
    yaml.preserve_quotes = True
    with _locked(Path(params_path)):
        doc = yaml.load(Path(params_path).read_text())
        current = [int(c) for c in (doc["data"].get("excluded_classes") or [])]
        merged = sorted(set(current) | set(classes))
        if merged != current:
            seq = doc["data"]["excluded_classes"]
            seq.clear()
            seq.extend(merged)
            seq.fa.set_flow_style()
            tmp = Path(f"{params_path}.{os.getpid()}.tmp")
            with open(tmp, "w") as handle:
                yaml.dump(doc, handle)
            load_params(tmp)  # never leave a params file the pipeline cannot read
            tmp.replace(params_path)
    return merged


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file at ``path`` itself, held while it is replaced: a waiter that
    wakes up on the replaced file locks the new one instead."""
    while True:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
        fcntl.flock(handle, fcntl.LOCK_EX)
        if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
            break
        handle.close()
    try:
        yield
    finally:
        handle.close()
