"""Command-line parsing that fails before any service or model is touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows import timing


def test_flow_timing_needs_a_cold_and_a_warm_deletion(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        timing.main(["--classes", "3"])
    assert exit_info.value.code == 2
    assert "needs two or more classes" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["forget", "--help"]])
def test_help_goes_to_stdout(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Everything but JSON is sent to stderr while a command runs; help is asked for, so stdout."""
    from flows.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr()
    assert out.out.startswith("usage: lau") and "usage:" not in out.err


def test_lau_exits_fast_but_finishes_threads_and_exit_handlers(tmp_path: Path) -> None:
    """`lau`'s entry point skips the interpreter's teardown; an idle thread pool (dvc and boto3
    leave them) must not hang it, and atexit handlers (Prefect's log drain) must still run."""
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, concurrent.futures, pathlib\n"
        "import flows.cli as cli\n"
        "pool = concurrent.futures.ThreadPoolExecutor(2)\n"
        "pool.submit(lambda: 1).result()\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
        "cli.main = lambda argv=None: 7\n"
        "cli.run()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 7, done.stderr
    assert marker.read_text() == "yes"
