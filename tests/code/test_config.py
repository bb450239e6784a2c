"""params.yaml -> lau.config.Params: strict, typed, every key documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from lau.config import Params, load_params
from lau.errors import BadInput


def write_params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repo_params_yaml_loads(repo_root: Path) -> None:
    params = load_params(repo_root / "params.yaml")
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert isinstance(params, Params)
    assert params.data.dataset == raw["data"]["dataset"]
    assert params.unlearn.eps == float(raw["unlearn"]["eps"])
    assert params.unlearn.forget_classes == tuple(raw["unlearn"]["forget_classes"])
    assert params.train.epochs == raw["train"]["epochs"]


def test_params_yaml_holds_every_hyperparameter(repo_root: Path) -> None:
    """Every field of Params appears in params.yaml and vice versa: the file is the whole config."""
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    in_file = {f"{section}.{key}" for section, keys in raw.items() for key in keys}
    in_code = {f"{section}.{key}" for section, keys in Params().to_dict().items() for key in keys}
    assert in_file == in_code


def test_every_key_in_params_yaml_has_a_comment(repo_root: Path) -> None:
    undocumented = []
    for number, line in enumerate((repo_root / "params.yaml").read_text().splitlines(), 1):
        if not re.match(r"^\s+[A-Za-z_][A-Za-z0-9_]*:", line):
            continue  # blank line, comment line or section header (`unlearn:`)
        key, _, rest = line.partition(":")
        value_and_comment = re.sub(r'"[^"]*"|\'[^\']*\'', "", rest)  # drop quoted values ("0 2 * * *")
        if "#" not in value_and_comment or not value_and_comment.split("#", 1)[1].strip():
            undocumented.append(f"line {number}: {key.strip()}")
    assert not undocumented, f"keys without a comment: {undocumented}"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write_params(tmp_path, "unlearn:\n  eps: 2.0\n  foo: 1\n")
    with pytest.raises(BadInput, match=r"unlearn\.foo"):
        load_params(path)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unlearnn"):
        load_params(write_params(tmp_path, "unlearnn:\n  eps: 2.0\n"))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = write_params(tmp_path, 'unlearn:\n  eps: "2.0"\n')
    with pytest.raises(BadInput, match=r"unlearn\.eps"):
        load_params(path)


def test_negative_epochs_is_named(tmp_path: Path) -> None:
    path = write_params(tmp_path, "train:\n  epochs: -1\n")
    with pytest.raises(BadInput, match=r"train\.epochs"):
        load_params(path)


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"train\.epochs"):
        load_params(write_params(tmp_path, "train:\n  epochs: true\n"))


def test_partial_file_keeps_defaults_and_integers_become_floats(tmp_path: Path) -> None:
    params = load_params(write_params(tmp_path, "unlearn:\n  eps: 3\n"))
    assert params.unlearn.eps == 3.0 and isinstance(params.unlearn.eps, float)
    assert params.train == Params().train


def test_missing_file_and_bad_yaml_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(BadInput, match="YAML"):
        load_params(write_params(tmp_path, "unlearn: [eps: 1\n"))


def test_replace_changes_one_section_and_type_checks() -> None:
    params = Params()
    changed = params.replace("unlearn", eps=3.5, depth=2)
    assert (changed.unlearn.eps, changed.unlearn.depth) == (3.5, 2)
    assert params.unlearn.eps == 2.0 and params.unlearn.depth == 1  # the original is frozen, untouched
    assert changed.train == params.train
    with pytest.raises(BadInput, match=r"unlearn\.eps"):
        params.replace("unlearn", eps="big")
    with pytest.raises(BadInput, match=r"unlearn\.foo"):
        params.replace("unlearn", foo=1)
    with pytest.raises(BadInput, match=r"train\.epochs"):
        params.replace("train", epochs=0)
    with pytest.raises(BadInput, match=r"unlearn\.optimizer"):
        params.replace("unlearn", optimizer="rmsprop")


def test_params_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Params().unlearn.eps = 1.0  # type: ignore[misc]
