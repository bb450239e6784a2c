"""Command-line parsing that fails before any service or model is touched."""

from __future__ import annotations

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
