"""Safe artifacts: nothing the pipeline reads from S3 or MLflow is unpickled; a file carrying a
pickle payload is refused without running it; the weights' sha256 recorded at registration
(`lau.weights_sha256`) is checked whenever a version is loaded, so a tampered checkpoint is refused
with a clear error (and a damaged local copy is fetched again).

The payload is real: unpickling it creates a marker file, so "refused" also means "never ran".
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import pickle
import re
import tempfile
from pathlib import Path

import pytest
import torch
from reliability_harness import (
    REPO,
    artifact_key,
    bucket,
    ledger_objects,
    mlflow_client,
    needs_stack,
    s3_client,
    unique,
    versions,
)

pytestmark = [needs_stack, pytest.mark.reliability]

# Calls that unpickle (or run code) when they read a file.
UNPICKLING = re.compile(r"\bpickle\.loads?\(|Unpickler\(|torch\.load\(|torch\.jit\.load\(|joblib\.load\(|"
                        r"cloudpickle\.loads?\(|dill\.loads?\(|\.load_model\(|read_pickle\(|shelve\.open\(|"
                        r"allow_pickle\s*=\s*True|marshal\.loads?\(|(?<![.\w])eval\(|(?<![.\w])exec\(")
# The one reviewed exception: CIFAR-10's python batches, read from the user's own data.root (never
# from S3 or MLflow) by an Unpickler that rebuilds numpy arrays and nothing else.
ALLOWED = {"lau/formats.py": {"class _ArrayUnpickler(pickle.Unpickler):",
                           'batch = _ArrayUnpickler(handle, encoding="latin1").load()'},
           # a team's .pt/.pth state dict: torch's weights-only unpickler refuses every global
           # (tests/code/test_adopt_inputs.py proves a payload never runs)
           "lau/adopt.py": {'obj = torch.load(path, map_location="cpu", weights_only=True)'}}


class Payload:
    """Unpickling this creates ``marker``: proof that the file was run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return builtins.open, (self.marker, "w")


def pickled(marker: Path) -> bytes:
    """A torch.save file (a pickle in a zip, what a `.pt` checkpoint is) whose tensor dict carries the payload."""
    buffer = io.BytesIO()
    torch.save({"features.0.weight": torch.zeros(1), "payload": Payload(marker)}, buffer)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), "a pickle payload was unpickled"


def test_the_pipeline_code_has_no_unpickling_call() -> None:
    found = []
    for folder in ("lau", "tasks", "flows"):
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = str(path.relative_to(REPO))
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0].strip()
                if UNPICKLING.search(code) and code not in ALLOWED.get(relative, set()):
                    found.append(f"{relative}:{number}: {code}")
    assert not found, "\n".join(found)


def register_checkpoint(reference: str, name: str, weights: bytes, *, config_sha: str, tag_sha: str) -> None:
    """Register ``name`` v1 (champion) with the reference's tags and a checkpoint of our making."""
    client = mlflow_client()
    original = client.get_model_version_by_alias(reference, "champion")
    experiment_id = client.create_experiment(f"lau/{name}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(client.download_artifacts(original.run_id, "checkpoint", tmp))
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "weights_sha256": config_sha}))
        (folder / "model.safetensors").write_bytes(weights)
        run = client.create_run(experiment_id, run_name="crafted checkpoint")
        client.log_artifacts(run.info.run_id, str(folder), "checkpoint")
        client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    tags = {**original.tags, "lau.weights_sha256": tag_sha}
    version = client.create_model_version(name, original.source, run_id=run.info.run_id, tags=tags,
                                          model_id=original.source.removeprefix("models:/"))
    client.set_registered_model_alias(name, "champion", version.version)


def registry_load(model: str, work_dir: Path):  # noqa: ANN201 - (SplitModel, config)
    from tasks.registry import Registry

    registry = Registry(model)
    return registry.load(registry.require_champion(), work_dir)


@pytest.mark.slow  # needs the session's trained model (conftest.reference)
def test_a_checkpoint_carrying_a_pickle_payload_is_refused(reference, workspace, marker: Path,
                                                           tmp_path: Path) -> None:  # noqa: ANN001
    """Even registered with its true sha256 (an attacker who could register), a pickled `.pt` posing
    as model.safetensors is refused by `lau forget` before anything is filed, and never runs."""
    from tasks.settings import InfraError

    payload = pickled(marker)
    model = unique("rel-pickle")
    register_checkpoint(reference.model, model, payload, config_sha=sha256(payload), tag_sha=sha256(payload))
    with pytest.raises(InfraError, match="does not load.*not a safetensors file"):
        registry_load(model, tmp_path)
    run = workspace.lau("forget", "--classes", "3", model=model)
    assert run.code == 3 and run.lines == [run.lines[-1]], run.describe()
    assert "does not load" in run.lines[-1] and "Traceback" not in run.stderr
    assert ledger_objects(model) == {}, "a request was filed for a model that cannot be loaded"


@pytest.mark.parametrize("reader", ["features", "data", "cifar10"])
def test_cached_features_and_data_carrying_a_pickle_payload_are_refused(reader: str, marker: Path,
                                                                        tmp_path: Path) -> None:
    from lau.data import load_dataset, load_split
    from lau.errors import BadInput
    from lau.features import load_features

    payload = pickled(marker)
    if reader == "features":  # what tasks.features reads from s3://.../features/<key>/
        (tmp_path / "features.safetensors").write_bytes(payload)
        call = lambda: load_features(tmp_path)  # noqa: E731
    elif reader == "data":  # what tasks.data reads from the DVC remote
        (tmp_path / "dataset.safetensors").write_bytes(payload)
        call = lambda: load_split(tmp_path / "dataset.safetensors")  # noqa: E731
    else:  # CIFAR-10's python batches: the one reader that unpickles, restricted to numpy arrays
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (folder / name).write_bytes(pickle.dumps({"data": Payload(marker), "labels": []}))
        call = lambda: load_dataset("cifar10", str(tmp_path), 0)  # noqa: E731
    with pytest.raises(BadInput):
        call()


@pytest.mark.slow  # needs the session's trained model (conftest.reference)
def test_a_tampered_stored_checkpoint_is_refused_by_its_registered_hash(copy_of_reference,
                                                                         tmp_path: Path) -> None:  # noqa: ANN001
    """One weight changed in the artifact store, config.json updated to match (whoever can write the
    bucket can write both): still a valid safetensors file, so only the sha256 recorded in the
    registry stands between it and the deletion flow."""
    from safetensors.torch import load, save

    from tasks.settings import InfraError

    model = copy_of_reference("rel-tamper")
    (version,) = versions(model)
    s3 = s3_client()
    weights_key = artifact_key(version.run_id, "checkpoint/model.safetensors")
    config_key = artifact_key(version.run_id, "checkpoint/config.json")
    tensors = load(s3.get_object(Bucket=bucket(), Key=weights_key)["Body"].read())
    name = sorted(tensors)[-1]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1.0
    tampered = save(tensors)
    config = json.loads(s3.get_object(Bucket=bucket(), Key=config_key)["Body"].read())
    s3.put_object(Bucket=bucket(), Key=weights_key, Body=tampered)
    s3.put_object(Bucket=bucket(), Key=config_key, Body=json.dumps({**config, "weights_sha256": sha256(tampered)}))
    with pytest.raises(InfraError, match="does not match the sha256 recorded at registration"):
        registry_load(model, tmp_path)
    assert not (tmp_path / "checkpoints" / model / version.version).exists(), "the tampered copy was kept"


@pytest.mark.slow  # needs the session's trained model (conftest.reference)
def test_a_damaged_local_copy_is_fetched_again(copy_of_reference, tmp_path: Path,
                                               capfd: pytest.CaptureFixture) -> None:  # noqa: ANN001
    from lau.utils import file_sha256

    model = copy_of_reference("rel-local")
    (version,) = versions(model)
    registry_load(model, tmp_path)  # a good local copy
    weights = tmp_path / "checkpoints" / model / version.version / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated on disk
    loaded, _ = registry_load(model, tmp_path)
    assert file_sha256(weights) == version.tags["lau.weights_sha256"]
    assert "is damaged; downloading it again" in capfd.readouterr().err
    assert loaded.spec.num_classes == 10
