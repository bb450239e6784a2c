"""`lau`: the front door. Each command starts a flow (or a benchmark) and prints JSON with --json.

Exit status: 0 success, 1 the gate rejected the candidate, 2 bad input, 3 infrastructure failure.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading

from cli import adopt, bench, commands
from cli.output import CliError, Console, ExitCode, fail, looks_like_infra
from cli.parse import Parser
from lau.errors import BadInput
from tasks.settings import InfraError

COMMANDS = {"train": commands.train, "forget": commands.forget, "request": commands.request,
            "process": commands.process, "serve": commands.serve, "bench": bench.bench,
            "report": commands.report, "reproduce": commands.reproduce, "erasures": commands.erasures,
            "consolidate": commands.consolidate, "dashboard": commands.dashboard, "adopt": adopt.adopt}


def _common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    p.add_argument("--model", default=None, help="registered model name (default: registry.model_name)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON on stdout, nothing else")


def _deletion_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forget", help="file a deletion request and run the deletion flow for it now")
    p.add_argument("--classes", required=True, help="class ids to forget, e.g. 3 or 3,5")
    p.add_argument("--reason", default="", help="free text kept in the ledger (no personal data)")
    p.add_argument("--max-retain-drop", default=None,
                   help="this request's gate threshold in points (-100..100), kept with the request")
    _common(p)
    p = sub.add_parser("request", help="the deletion-request ledger")
    rsub = p.add_subparsers(dest="request_command", required=True, parser_class=Parser)
    r = rsub.add_parser("add", help="file a request for the scheduled flow")
    r.add_argument("--classes", required=True)
    r.add_argument("--reason", default="")
    r.add_argument("--max-retain-drop", default=None, help="this request's gate threshold in points")
    _common(r)
    _common(rsub.add_parser("list", help="every request of a model"))
    r = rsub.add_parser("show", help="one request")
    r.add_argument("request_id")
    _common(r)
    _common(sub.add_parser("process", help="one pass of the scheduled deletion flow over pending requests"))
    p = sub.add_parser("erasures", help="the model's erasure record: every erased class, its request, "
                                        "version and time")
    p.add_argument("--write", default=None, metavar="PATH",
                   help="write the erased class ids to PATH for `dvc repro` (an empty set, with one line on "
                        "stderr, when the record cannot be read)")
    _common(p)


def build_parser() -> Parser:
    parser = Parser(prog="lau", description="Machine unlearning for MLflow-served classifiers (LAU).")
    parser.add_argument("--params", default=None, help="params.yaml to use (default: $LAU_PARAMS or ./params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("train", help="train the original model (erased classes left out); the gate "
                                     "decides whether it becomes the champion")
    p.add_argument("--dataset", help="dataset name (default: data.dataset)")
    p.add_argument("--arch", help="backbone (default: model.arch)")
    p.add_argument("--epochs", type=int, help="training epochs (default: train.epochs)")
    _common(p)
    _deletion_commands(sub)
    _common(sub.add_parser("consolidate", help="retrain on the cleaned data now, gate, promote (the weekly "
                                               "deployment does this on its schedule)"))
    adopt.add_parser(sub)
    p = sub.add_parser("serve", help="serve the deployments (scheduled deletion flow on its cron)")
    p.add_argument("--cron", default=None, help="override schedule.cron")
    p.add_argument("--interval", type=float, default=None, help="run every N seconds instead of the cron")
    p.add_argument("--poll", type=float, default=0.2,
                   help="the warm worker's poll of the ledger, in seconds: one S3 LIST each (0 = no warm worker)")
    _common(p, json_flag=False)
    bench.add_parser(sub)
    p = sub.add_parser("dashboard", help="serve the ops dashboard (the erasure page and /metrics) alone")
    p.add_argument("--port", type=int, default=None, help="port (default: LAU_DASHBOARD_PORT, else 8050)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--model", default=None, help="model shown at / (default: registry.model_name)")
    p = sub.add_parser("report", help="where the audit report of a request or version is (or print it)")
    p.add_argument("id", help="request id, or a version number of the model")
    p.add_argument("--print", action="store_true", help="print the markdown report itself")
    _common(p, json_flag=False)
    p = sub.add_parser("reproduce", help="reproduce a registered version with `dvc repro` and compare")
    p.add_argument("version", help="version number of the model")
    p.add_argument("--workdir", default=None, help="where to clone the repository (default: a temp dir)")
    _common(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; JSON and results go to the real stdout, everything else to stderr."""
    Console.stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        return _run(argv)
    finally:
        sys.stdout = Console.stdout


def _run(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.params:
            os.environ["LAU_PARAMS"] = args.params
        return int(COMMANDS[args.command](args))
    except CliError as err:
        return fail(str(err), err.code)
    except BadInput as err:
        return fail(f"lau: {err}", ExitCode.BAD_INPUT)
    except KeyboardInterrupt:
        return fail("lau: interrupted", ExitCode.INTERRUPTED)
    except Exception as err:  # noqa: BLE001 - one line, never a traceback
        if isinstance(err, InfraError) or looks_like_infra(err):
            return fail(f"lau: infrastructure failure: {err}", ExitCode.INFRA)
        if os.environ.get("LAU_DEBUG"):
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        return fail(f"lau: unexpected error ({type(err).__name__}): {first} (set LAU_DEBUG=1 for the traceback)",
                    ExitCode.INFRA)


def run() -> None:
    """The `lau` entry point: ``main()``, then an exit without the interpreter's teardown.

    Tearing down torch, MLflow and Prefect's modules took 1.3-1.9 s after every command (measured:
    `lau forget` 10.7 s wall, 9.0 s with this). Everything that must happen at exit still does,
    in the interpreter's own order: non-daemon threads are stopped and joined, every atexit handler runs
    (Prefect's log and event drains, logging.shutdown, weakref finalizers), stdout and stderr are
    flushed; only the freeing of memory the OS reclaims anyway is skipped.
    """
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
