"""What the `lau` command prints and how it exits.

Exit status: 0 success, 1 the gate rejected the candidate, 2 bad input, 3 infrastructure failure.
Errors are one line on stderr; progress and logs go to stderr; with --json, stdout holds only JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import IntEnum
from typing import Any, TextIO

from tasks.ledger import Outcome


class ExitCode(IntEnum):
    OK = 0
    REJECTED = 1
    BAD_INPUT = 2
    INFRA = 3
    INTERRUPTED = 130


EXIT_FOR = {Outcome.REGISTERED: ExitCode.OK, Outcome.GATE_REJECTED: ExitCode.REJECTED,
            Outcome.BAD_INPUT: ExitCode.BAD_INPUT, Outcome.FAILED: ExitCode.INFRA}
INFRA_ERRORS = {"ConnectError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "HTTPStatusError",
                "PrefectHTTPStatusError", "EndpointConnectionError", "MaxRetryError", "ConnectionRefusedError"}


class CliError(Exception):
    """A usage error the parser found: one line, its own exit code."""

    def __init__(self, message: str, code: ExitCode):
        super().__init__(message)
        self.code = code


class Console:
    """Where a command's result goes: the real stdout. While a command runs, ``sys.stdout`` is
    pointed at stderr, so MLflow's and Prefect's chatter cannot mix into --json output."""

    stdout: TextIO = sys.stdout

    @classmethod
    def emit(cls, obj: Any, as_json: bool, human: str) -> None:
        """JSON on stdout with --json, else a human summary."""
        print(json.dumps(obj, indent=2, default=str) if as_json else human, file=cls.stdout, flush=True)

    @classmethod
    def out(cls, text: str) -> None:
        """A command's result on stdout."""
        print(text, file=cls.stdout, flush=True)


def exit_code(summary: dict[str, Any]) -> ExitCode:
    """The exit code of one request's summary (`lau forget`, `lau process`): a request still
    pending or running after its flow (interrupted) is an infrastructure failure too."""
    outcome = summary.get("outcome")
    return EXIT_FOR[Outcome(outcome)] if outcome else ExitCode.INFRA


def fail(message: str, code: int) -> int:
    """One line on stderr; returns the exit code."""
    print(message.splitlines()[0] if message else "lau: error", file=sys.stderr, flush=True)
    return code


def looks_like_infra(err: BaseException) -> bool:
    """A connection-level failure anywhere in the exception chain (a service is down)."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return bool({type(e).__name__ for e in seen} & INFRA_ERRORS)


def console_without_tracebacks() -> None:
    """Prefect logs a failed task's or flow's traceback on the console; the CLI promises none.
    Call once Prefect has set up logging (after importing a flow). The traceback still reaches the
    Prefect UI (its API handler runs first); LAU_DEBUG=1 keeps it on the console too."""
    if os.environ.get("LAU_DEBUG"):
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _DropTraceback) for f in handler.filters):
            handler.addFilter(_DropTraceback())


class _DropTraceback(logging.Filter):
    """The record's message stays, its exception text goes."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True
