"""Bad input through the real `lau` command: exit 2 (3 when a service or a stored artifact is at
fault), exactly one line on stderr, no traceback, and the registry (versions, tags, champion) and the
ledger exactly as they were.

CASES is also the table of the README's "Bad input" section.
"""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import yaml
from reliability_harness import artifact_key, bucket, needs_stack, s3_client, snapshot, unique, versions

pytestmark = [needs_stack, pytest.mark.reliability, pytest.mark.slow]

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens there
ERROR_LINE = re.compile(r"^lau( [a-z]+)*: ")  # `lau: ...`, or argparse's `lau train: ...`


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]  # {model} and {params} are filled in
    code: int
    says: str  # in the one error line
    params: dict = field(default_factory=dict)  # section -> keys changed in a private params.yaml
    env: dict = field(default_factory=dict)


CASES = [
    Case("unknown class", ("forget", "--classes", "99"), 2, "unknown class 99"),
    Case("negative class", ("forget", "--classes=-1"), 2, "cannot be negative"),
    Case("non-integer class", ("forget", "--classes", "abc"), 2, "must be integers"),
    Case("duplicate class", ("forget", "--classes", "3,3"), 2, "listed twice"),
    Case("empty class list", ("forget", "--classes", ""), 2, "expected class ids"),
    Case("empty item in the list", ("forget", "--classes", "3,"), 2, "expected class ids"),
    Case("every class at once", ("forget", "--classes", "0,1,2,3,4,5,6,7,8,9"), 2, "no class"),
    Case("unknown class, queued", ("request", "add", "--classes", "10"), 2, "unknown class 10"),
    Case("unknown model", ("forget", "--classes", "3", "--model", "{nobody}"), 2, "has no 'champion'"),
    Case("unknown model, process", ("process", "--model", "{nobody}"), 2, "has no 'champion'"),
    Case("unknown request id", ("request", "show", "req-20000101-deadbeef"), 2, "unknown request id"),
    Case("unknown request id, report", ("report", "req-20000101-deadbeef"), 2, "unknown request id"),
    Case("malformed threshold", ("forget", "--classes", "3", "--max-retain-drop", "abc"), 2, "expected a number"),
    Case("NaN threshold", ("forget", "--classes", "3", "--max-retain-drop", "nan"), 2, "finite number"),
    Case("infinite threshold", ("forget", "--classes", "3", "--max-retain-drop", "inf"), 2, "finite number"),
    Case("threshold out of range", ("request", "add", "--classes", "3", "--max-retain-drop", "250"), 2,
         "between -100 and 100"),
    Case("unknown dataset", ("train", "--dataset", "nope"), 2, "unknown dataset 'nope'"),
    Case("unknown arch", ("train", "--arch", "nope"), 2, "unknown arch 'nope'"),
    Case("negative epochs", ("train", "--epochs", "-1"), 2, "--epochs must be > 0"),
    Case("non-integer epochs", ("train", "--epochs", "two"), 2, "invalid int value"),
    Case("unknown command", ("forgets", "--classes", "3"), 2, "invalid choice"),
    Case("params: unknown key", ("--params", "{params}", "forget", "--classes", "3"), 2,
         "unknown key 'data.colour'", params={"data": {"colour": "red"}}),
    Case("params: wrong type", ("--params", "{params}", "process"), 2,
         "'train.epochs' must be an integer", params={"train": {"epochs": "four"}}),
    Case("params: value out of range", ("--params", "{params}", "process"), 2,
         "'unlearn.alpha' must be between 0 and 1", params={"unlearn": {"alpha": 2}}),
    Case("missing data folder", ("--params", "{params}", "train"), 2, "not found",
         params={"data": {"dataset": "imagefolder", "root": "/nonexistent/faces"}}),
    Case("wrong S3 secret", ("request", "list"), 3, "rejected the credentials",
         env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"}),
    Case("wrong S3 key", ("forget", "--classes", "3"), 3, "rejected the credentials",
         env={"AWS_ACCESS_KEY_ID": "nobody"}),
    Case("MLflow unreachable", ("forget", "--classes", "3"), 3, "MLflow", env={"MLFLOW_TRACKING_URI": NOWHERE}),
    Case("Prefect unreachable", ("process",), 3, "Failed to reach API", env={"PREFECT_API_URL": f"{NOWHERE}/api"}),
]


@pytest.fixture(scope="module")
def model(copy_of_reference) -> str:  # noqa: ANN001
    return copy_of_reference("rel-bad")


@dataclass
class Batch:
    before: dict
    after: dict
    runs: dict  # case name -> Run


@pytest.fixture(scope="module")
def batch(workspace, model: str, tmp_path_factory) -> Batch:  # noqa: ANN001
    """Every case, four at a time (each is a `lau` process that mostly imports and waits); the
    registry and the ledger are read before the first and after the last."""
    folder = tmp_path_factory.mktemp("bad-params")

    def run_case(case: Case):  # noqa: ANN202 - a Run
        params = folder / f"{case.name.replace(' ', '-').replace(':', '')}.yaml"
        if case.params:
            doc = yaml.safe_load(workspace.params.read_text())
            for section, keys in case.params.items():
                doc[section].update(keys)
            params.write_text(yaml.safe_dump(doc, sort_keys=False))
        args = [a.format(params=params, nobody=unique("rel-nobody")) for a in case.args]
        return workspace.lau(*args, model=None if "--model" in args else model, **case.env)

    before = snapshot(model)
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(zip([c.name for c in CASES], pool.map(run_case, CASES)))
    return Batch(before, snapshot(model), runs)


def assert_one_line(run, case: Case) -> None:  # noqa: ANN001
    assert run.code == case.code, run.describe()
    assert len(run.lines) == 1 and ERROR_LINE.match(run.lines[0]), run.describe()
    assert case.says in run.lines[0], run.describe()
    assert "Traceback" not in run.stderr + run.stdout


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_in_one_line(case: Case, batch: Batch) -> None:
    run = batch.runs[case.name]
    if case.name == "missing data folder":  # refused inside the train flow: Prefect's log, then the line
        assert run.code == case.code and run.error_lines == [run.lines[-1]], run.describe()
        assert case.says in run.lines[-1] and "Traceback" not in run.stderr, run.describe()
    else:
        assert_one_line(run, case)


def test_bad_input_changes_neither_the_registry_nor_the_ledger(batch: Batch) -> None:
    assert batch.after == batch.before


def test_a_tampered_checkpoint_in_the_artifact_store_is_refused(workspace, model: str) -> None:  # noqa: ANN001
    """The champion's weights on S3 (under mlflow/, behind the MLflow server) are cut in half:
    `lau forget` refuses before filing anything (exit 3: the stored artifact is at fault)."""
    (version,) = versions(model)
    key = artifact_key(version.run_id, "checkpoint/model.safetensors")
    s3 = s3_client()
    original = s3.get_object(Bucket=bucket(), Key=key)["Body"].read()
    shutil.rmtree(workspace.work / "checkpoints" / model, ignore_errors=True)  # no good local copy
    before = snapshot(model)
    s3.put_object(Bucket=bucket(), Key=key, Body=original[: len(original) // 2])
    try:
        run = workspace.lau("forget", "--classes", "3", model=model)
    finally:
        s3.put_object(Bucket=bucket(), Key=key, Body=original)
    case = Case("tampered checkpoint", (), 3, "does not match the sha256 recorded at registration")
    assert_one_line(run, case)
    assert snapshot(model) == before
    assert not (workspace.work / "checkpoints" / model / version.version).exists(), "the bad copy was kept"

