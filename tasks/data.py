"""Prepared data on S3, stored where DVC stores it: ``dvc/files/md5/<2>/<30>``.

The data version of a lineage is the prepared file's md5, which is also its DVC address, so
`dvc pull` and the flows read the very same object.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefect import task

from lau.config import Params
from lau.data import Split, load_split, prepare, save_split
from lau.errors import BadInput
from lau.utils import file_md5
from tasks.context import Context
from tasks.policy import IO, MATH
from tasks.s3 import Storage
from tasks.settings import InfraError


def dvc_key(md5: str) -> str:
    return f"dvc/files/md5/{md5[:2]}/{md5[2:]}"


def cleaned(params: Params, erased: tuple[int, ...]) -> Params:
    """params with every erased class added to ``data.excluded_classes`` (the user's static list
    stays as it is in params.yaml; the erasure record adds to it)."""
    excluded = tuple(sorted(set(params.data.excluded_classes) | set(erased)))
    return dataclasses.replace(params, data=dataclasses.replace(params.data, excluded_classes=excluded))


@task(name="prepare data", **MATH)
def prepare_data(params: Params, work_dir: Path) -> tuple[Split, Path]:
    """The stratified split of params' dataset (excluded classes removed), saved locally."""
    split = prepare(params.data)
    path = work_dir / "prepared" / f"dataset-{params.data.dataset}.safetensors"
    save_split(split, path)
    return split, path


@task(name="upload data", **IO)
def upload_data(ctx: Context, path: Path) -> tuple[str, str]:
    """Upload the prepared file under its md5; returns (data version, S3 URI)."""
    md5 = file_md5(path)
    key = dvc_key(md5)
    if not ctx.storage.exists(key):
        ctx.storage.put_file(key, path)
    return md5, ctx.storage.uri(key)


def fetch(storage: Storage, md5: str, work_dir: Path) -> Split:
    """The prepared split of a data version (local copy first, else from S3). A missing or damaged
    copy is a storage fault (InfraError: retryable), never the request's."""
    path = work_dir / "data" / md5 / "dataset.safetensors"
    if not path.is_file() and not storage.get_file(dvc_key(md5), path):
        raise InfraError(f"data version {md5} is missing from s3://{storage.bucket}/{dvc_key(md5)}")
    if file_md5(path) != md5:
        path.unlink()
        raise InfraError(f"data version {md5}: the stored file has another md5 (damaged); refusing it")
    try:
        return load_split(path)
    except BadInput as err:
        path.unlink(missing_ok=True)
        raise InfraError(f"data version {md5}: {err}") from None
