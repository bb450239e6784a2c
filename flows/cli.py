"""`lau`: the front door. Each command starts a flow (or the benchmark) and prints JSON with --json.

Exit status: 0 success, 1 the gate rejected the candidate, 2 bad input, 3 infrastructure failure.
Errors are one line on stderr; progress and logs go to stderr; with --json, stdout holds only JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from lau.errors import BadInput

EXIT_OK, EXIT_REJECTED, EXIT_BAD_INPUT, EXIT_INFRA = 0, 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse that reports bad options as one line and exit 2 (its usage dump goes nowhere)."""

    def error(self, message: str) -> None:  # noqa: D102
        raise CliError(f"{self.prog}: {message}", EXIT_BAD_INPUT)

    def print_help(self, file=None) -> None:  # noqa: ANN001, D102 - `lau --help | less` reads stdout
        super().print_help(file or _STDOUT or sys.stdout)


def parse_classes(text: str) -> list[int]:
    """'3' or '3,5' -> [3, 5]; anything else is bad input."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(p == "" for p in parts):
        raise BadInput(f"--classes: expected class ids like 3 or 3,5, got {text!r}")
    try:
        classes = [int(p) for p in parts]
    except ValueError:
        raise BadInput(f"--classes: class ids must be integers, got {text!r}") from None
    if any(c < 0 for c in classes):
        raise BadInput(f"--classes: class ids cannot be negative, got {text!r}")
    if len(set(classes)) != len(classes):
        raise BadInput(f"--classes: a class is listed twice in {text!r}")
    return classes


def parse_drop(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"--max-retain-drop: expected a number of points, got {text!r}") from None
    if value != value:
        raise BadInput("--max-retain-drop: NaN is not a threshold")
    return value


def build_parser() -> Parser:
    parser = Parser(prog="lau", description="Machine unlearning for MLflow-served classifiers (LAU).")
    parser.add_argument("--params", default=None, help="params.yaml to use (default: $LAU_PARAMS or ./params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
        p.add_argument("--model", default=None, help="registered model name (default: registry.model_name)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON on stdout, nothing else")

    p = sub.add_parser("train", help="train the original model and register it as the champion")
    p.add_argument("--dataset", help="dataset name (default: data.dataset)")
    p.add_argument("--arch", help="backbone (default: model.arch)")
    p.add_argument("--epochs", type=int, help="training epochs (default: train.epochs)")
    common(p)

    p = sub.add_parser("forget", help="file a deletion request and run the deletion flow for it now")
    p.add_argument("--classes", required=True, help="class ids to forget, e.g. 3 or 3,5")
    p.add_argument("--reason", default="", help="free text kept in the ledger (no personal data)")
    p.add_argument("--max-retain-drop", default=None, help="override gate.max_retain_drop (points)")
    common(p)

    p = sub.add_parser("request", help="the deletion-request ledger")
    rsub = p.add_subparsers(dest="request_command", required=True, parser_class=Parser)
    r = rsub.add_parser("add", help="file a request for the scheduled flow")
    r.add_argument("--classes", required=True)
    r.add_argument("--reason", default="")
    common(r)
    r = rsub.add_parser("list", help="every request of a model")
    common(r)
    r = rsub.add_parser("show", help="one request")
    r.add_argument("request_id")
    common(r)

    p = sub.add_parser("process", help="one pass of the scheduled deletion flow over pending requests")
    common(p)

    p = sub.add_parser("serve", help="serve the deployments (scheduled deletion flow on its cron)")
    p.add_argument("--cron", default=None, help="override schedule.cron")
    p.add_argument("--interval", type=float, default=None, help="run every N seconds instead of the cron")
    common(p, json_flag=False)

    p = sub.add_parser("bench", help="side-by-side benchmark of unlearning methods on one trained model")
    p.add_argument("--methods", default="lau,retrain,finetune,neggrad,random_label,boundary_shrink")
    p.add_argument("--classes", default="3", help="class ids forgotten together, e.g. 3 or 3,5")
    p.add_argument("--each-class", action="store_true", help="also run every single class of the dataset")
    p.add_argument("--chain", default=None,
                   help="instead: sequential LAU deletions on one lineage, e.g. 3,5,1,8 (one class per step)")
    p.add_argument("--depth", type=int, default=None,
                   help="override unlearn.depth: trailing blocks LAU trains (1 = the paper)")
    p.add_argument("--json", dest="json_path", default="bench/out.json", help="where the JSON goes")

    p = sub.add_parser("report", help="where the audit report of a request or version is (or print it)")
    p.add_argument("id", help="request id, or a version number of the model")
    p.add_argument("--print", action="store_true", help="print the markdown report itself")
    common(p, json_flag=False)

    p = sub.add_parser("reproduce", help="reproduce a registered version with `dvc repro` and compare")
    p.add_argument("version", help="version number of the model")
    p.add_argument("--workdir", default=None, help="where to clone the repository (default: a temp dir)")
    common(p)
    return parser


_STDOUT = sys.stdout


def main(argv: list[str] | None = None) -> int:
    global _STDOUT
    _STDOUT = sys.stdout  # the JSON goes here; everything else that prints (MLflow, Prefect) goes to stderr
    sys.stdout = sys.stderr
    try:
        return _main(argv)
    finally:
        sys.stdout = _STDOUT


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.params:
            os.environ["LAU_PARAMS"] = args.params
        return dispatch(args)
    except CliError as err:
        return fail(str(err), err.code)
    except BadInput as err:
        return fail(f"lau: {err}", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return fail("lau: interrupted", 130)
    except Exception as err:  # noqa: BLE001 - one line, never a traceback
        from tasks.settings import InfraError

        if isinstance(err, InfraError) or _looks_like_infra(err):
            return fail(f"lau: infrastructure failure: {err}", EXIT_INFRA)
        if os.environ.get("LAU_DEBUG"):
            raise
        return fail(f"lau: unexpected error ({type(err).__name__}): {str(err).splitlines()[0] if str(err) else ''}"
                    " (set LAU_DEBUG=1 for the traceback)", EXIT_INFRA)


def dispatch(args: argparse.Namespace) -> int:
    from flows import commands

    handler = {"train": commands.train, "forget": commands.forget, "request": commands.request,
               "process": commands.process, "serve": commands.serve, "bench": commands.bench,
               "report": commands.report, "reproduce": commands.reproduce}[args.command]
    return handler(args)


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


def emit(obj: Any, as_json: bool, human: str) -> None:
    """JSON on stdout with --json, else a human summary."""
    print(json.dumps(obj, indent=2, default=str) if as_json else human, file=_STDOUT, flush=True)


def out(text: str) -> None:
    """A command's result on stdout (everything else goes to stderr)."""
    print(text, file=_STDOUT, flush=True)


def fail(message: str, code: int) -> int:
    print(message.splitlines()[0] if message else "lau: error", file=sys.stderr)
    return code


def _looks_like_infra(err: Exception) -> bool:
    names = {type(e).__name__ for e in _chain(err)}
    return bool(names & {"ConnectError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "HTTPStatusError",
                         "PrefectHTTPStatusError", "EndpointConnectionError", "MaxRetryError",
                         "ConnectionRefusedError"})


def _chain(err: BaseException) -> list[BaseException]:
    out = []
    while err is not None and err not in out:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def run() -> None:
    """The `lau` entry point: ``main()``, then an exit without the interpreter's teardown.

    Tearing down torch, MLflow and Prefect's modules took 1.3-1.9 s after every command (measured:
    `lau forget` 10.7 s wall, 9.0 s with this). Everything that must happen at exit still does,
    in the interpreter's own order: non-daemon threads are stopped and joined, every atexit handler runs
    (Prefect's log and event drains, logging.shutdown, weakref finalizers), stdout and stderr are
    flushed; only the freeing of memory the OS reclaims anyway is skipped.
    """
    import atexit
    import threading

    code = main()
    # What Py_Finalize does first, in its order: the threading atexit hooks (they stop idle
    # ThreadPoolExecutor workers; joining those without them hangs for ever), then every
    # non-daemon thread is joined; then the atexit handlers.
    threading._shutdown()  # noqa: SLF001 - private, but exactly the interpreter's own first step
    atexit._run_exitfuncs()  # noqa: SLF001 - likewise: the handlers os._exit would skip
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()

