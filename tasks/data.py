"""Prepared data on S3, stored where DVC stores it: ``dvc/files/md5/<2>/<30>``.

The data version of a lineage is the prepared file's md5, which is also its DVC address, so
`dvc pull` and the flows read the very same object.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from lau.config import Params
from lau.data import Split, load_split, save_split
from lau.pipeline import prepare_data
from lau.utils import file_md5
from tasks.common import IO, MATH, Context
from tasks.s3 import Storage


def dvc_key(md5: str) -> str:
    return f"dvc/files/md5/{md5[:2]}/{md5[2:]}"


@task(name="prepare data", **MATH)
def prepare(params: Params, work_dir: Path) -> tuple[Split, Path]:
    """The stratified split of params.yaml's dataset (excluded classes removed), saved locally."""
    split = prepare_data(params)
    path = work_dir / "prepared" / "dataset.safetensors"
    save_split(split, path)
    return split, path


@task(name="publish data", **IO)
def publish(ctx: Context, path: Path) -> tuple[str, str]:
    """Upload the prepared file under its md5; returns (data version, S3 URI)."""
    md5 = file_md5(path)
    key = dvc_key(md5)
    if not ctx.storage.exists(key):
        ctx.storage.put_file(key, path)
    return md5, ctx.storage.uri(key)


def fetch(storage: Storage, md5: str, work_dir: Path) -> Split:
    """The prepared split of a data version (local copy first, else from S3)."""
    from lau.errors import BadInput

    path = work_dir / "data" / md5 / "dataset.safetensors"
    if not path.is_file() and not storage.get_file(dvc_key(md5), path):
        raise BadInput(f"data version {md5} is not in s3://{storage.bucket}/{dvc_key(md5)}")
    if file_md5(path) != md5:
        path.unlink()
        raise BadInput(f"data version {md5}: downloaded file has another md5; refusing it")
    return load_split(path)
