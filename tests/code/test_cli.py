"""The `lau` command (cli/): parsing that fails before any service or model is touched, where its
output goes, how it exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from cli.output import ExitCode, exit_code
from cli.parse import parse_classes, parse_drop
from lau.errors import BadInput


def test_flow_timing_needs_a_cold_and_a_warm_deletion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--flow", "--classes", "3"]) == ExitCode.BAD_INPUT
    assert "two or more classes" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["forget", "--help"]])
def test_help_goes_to_stdout(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Everything but JSON is sent to stderr while a command runs; help is asked for, so stdout."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr()
    assert out.out.startswith("usage: lau") and "usage:" not in out.err


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "101", "-100.5", "five"])
def test_a_threshold_that_is_not_a_finite_number_of_points_is_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="--max-retain-drop"):
        parse_drop(text)


@pytest.mark.parametrize(("text", "value"), [("5", 5.0), ("-1", -1.0), ("0", 0.0), ("100", 100.0)])
def test_a_negative_threshold_stays_a_valid_strict_gate(text: str, value: float) -> None:
    assert parse_drop(text) == value


@pytest.mark.parametrize("text", ["", "3,", "a", "-1", "3,3"])
def test_bad_class_lists_are_refused(text: str) -> None:
    with pytest.raises(BadInput, match="--classes"):
        parse_classes(text)


@pytest.mark.parametrize(("outcome", "code"), [("registered", 0), ("gate_rejected", 1), ("bad_input", 2),
                                               ("failed", 3), (None, 3)])
def test_each_outcome_has_its_exit_code(outcome: str | None, code: int) -> None:
    """A request still running after its flow (interrupted) is not a success either."""
    assert exit_code({"outcome": outcome}) == code


def test_lau_exits_fast_but_finishes_threads_and_exit_handlers(tmp_path: Path) -> None:
    """`lau`'s entry point skips the interpreter's teardown; an idle thread pool (dvc and boto3
    leave them) must not hang it, and atexit handlers (Prefect's log drain) must still run."""
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, concurrent.futures, pathlib\n"
        "import cli.main as cli\n"
        "pool = concurrent.futures.ThreadPoolExecutor(2)\n"
        "pool.submit(lambda: 1).result()\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
        "cli.main = lambda argv=None: 7\n"
        "cli.run()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 7, done.stderr
    assert marker.read_text() == "yes"


def test_bench_names_the_flag_whose_class_list_is_bad() -> None:
    from cli.parse import parse_classes
    from lau.errors import BadInput

    with pytest.raises(BadInput, match=r"^--then-chain: class ids must be integers"):
        parse_classes("3,x", "--then-chain")
