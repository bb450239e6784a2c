"""What each `lau` command does. Input is checked before anything is filed, and before the flows
(and torch, MLflow, Prefect with them) are imported: bad input fails in a fraction of a second."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cli.output import Console, ExitCode, console_without_tracebacks, exit_code
from cli.parse import parse_classes, parse_drop
from lau.config import load_params
from lau.errors import BadInput
from tasks.settings import InfraError, require_stack


def _context(args: argparse.Namespace):  # noqa: ANN202 - tasks.context.Context
    from tasks.context import Context

    require_stack()
    return Context.load(getattr(args, "model", None))


def _validate(ctx: Any, classes: list[int]) -> None:
    """Refuse a request before it is filed: unknown model, unknown class, already forgotten."""
    from lau.data import check_classes

    champion = ctx.registry.require_champion()
    num_classes = int(champion.tag("num_classes", "0"))
    check_classes(classes, num_classes, what="--classes", excluded=())
    erased = sorted(set(classes) & (set(champion.forgotten) | set(ctx.erasures.classes(ctx.model_name))))
    if erased:
        raise BadInput(f"--classes: {erased} already erased from '{ctx.model_name}' (see `lau erasures`)")
    check_classes(classes, num_classes, what="--classes", excluded=champion.excluded)
    if len(set(classes) | set(champion.forgotten) | set(champion.excluded)) >= num_classes:
        raise BadInput(f"--classes: forgetting {classes} would leave '{ctx.model_name}' no class to serve")


def _line(summary: dict) -> str:
    metrics = summary.get("metrics") or {}
    text = (f"{summary['request_id']}: {summary['status']} (model {summary['model']}, parent "
            f"{summary.get('parent_version')}, version {summary.get('version') or '-'}, forgotten "
            f"{summary.get('forgotten_classes')})")
    if metrics:
        text += (f"\n  forget_acc {metrics.get('forget_acc')} test_forget_acc {metrics.get('test_forget_acc')} "
                 f"test_retain_acc {metrics.get('test_retain_acc')} retain_drop {metrics.get('retain_drop')}")
    if summary.get("error"):
        text += f"\n  reason: {summary['error']}"
    if summary.get("report_uri"):
        text += f"\n  report: {summary['report_uri']}"
    return text


def _finish(summaries: list[dict], as_json: bool, one: bool) -> int:
    """Print the request summaries; the exit code is the worst; a failed request's error is the
    last line on stderr."""
    Console.emit(summaries[0] if one else summaries, as_json,
                 "\n".join(_line(s) for s in summaries) or "no pending requests")
    codes = [exit_code(s) for s in summaries]
    failed = [s for s in summaries if exit_code(s) == ExitCode.INFRA]
    if failed:
        print(f"lau: infrastructure failure: request {failed[-1]['request_id']} failed: "
              f"{failed[-1].get('error') or 'interrupted'} (retry with `lau process`)", file=sys.stderr)
    return max(codes, default=ExitCode.OK)


def _root_result(result: dict, as_json: bool) -> int:
    """`lau train` / `lau consolidate`: registered (0) or rejected by the gate (1)."""
    if result["status"] == "registered":
        human = (f"registered version {result['version']} of {result['model']} as champion: "
                 f"test_retain_acc {result['metrics'].get('test_retain_acc')}")
    else:
        human = f"{result['model']}: nothing registered: {result.get('error')}"
    Console.emit(result, as_json, human)
    return ExitCode.OK if result["status"] == "registered" else ExitCode.REJECTED


def train(args: argparse.Namespace) -> int:
    if args.epochs is not None and args.epochs <= 0:
        raise BadInput(f"--epochs must be > 0, got {args.epochs}")
    ctx = _context(args)
    from lau.data import DATASETS
    from lau.models import MODELS

    if args.dataset and args.dataset not in DATASETS:
        raise BadInput(f"unknown dataset '{args.dataset}'; choose one of: {', '.join(DATASETS)}")
    if args.arch and args.arch not in MODELS:
        raise BadInput(f"unknown arch '{args.arch}'; choose one of: {', '.join(MODELS)}")
    from flows.train import train_flow  # after the checks: bad input fails before the heavy imports

    console_without_tracebacks()
    result = train_flow(model_name=ctx.model_name, dataset=args.dataset, arch=args.arch, epochs=args.epochs,
                        params_path=str(ctx.settings.params_path))
    return _root_result(result, args.json)


def consolidate(args: argparse.Namespace) -> int:
    ctx = _context(args)
    arch = ctx.registry.require_champion().tag("arch")
    if arch.partition(":")[0] in ("torchvision", "timm"):  # lau.zoo.is_adopted_arch, without importing torch
        from lau.adopt import retrain_hint

        raise BadInput(retrain_hint(ctx.model_name, arch))
    from flows.train import consolidate as consolidate_flow

    console_without_tracebacks()
    return _root_result(consolidate_flow(model_name=ctx.model_name, params_path=str(ctx.settings.params_path)),
                        args.json)


def forget(args: argparse.Namespace) -> int:
    classes = parse_classes(args.classes)
    drop = parse_drop(args.max_retain_drop)
    ctx = _context(args)
    from tasks.lineage import verify_champion

    champion = verify_champion(ctx.registry, ctx.storage)  # a hand-promoted champion: exit 3, nothing filed
    _validate(ctx, classes)
    # a champion whose checkpoint is damaged cannot be unlearned: say so before filing anything
    ctx.registry.load(champion, ctx.settings.work_dir)
    from flows.deletion import deletion  # after the checks: bad input fails before the heavy imports

    console_without_tracebacks()
    request = ctx.ledger.add(ctx.model_name, classes, args.reason, drop)
    print(f"filed {request.request_id} for classes {classes}", file=sys.stderr)
    summary = deletion(request.request_id, model_name=ctx.model_name, params_path=str(ctx.settings.params_path))
    return _finish([summary], args.json, one=True)


def request(args: argparse.Namespace) -> int:
    ctx = _context(args)
    if args.request_command == "add":
        classes = parse_classes(args.classes)
        drop = parse_drop(args.max_retain_drop)
        _validate(ctx, classes)
        filed = ctx.ledger.add(ctx.model_name, classes, args.reason, drop)
        Console.emit(filed.summary(), args.json, f"filed {filed.request_id} for classes {classes} (pending)")
        return ExitCode.OK
    if args.request_command == "list":
        records = ctx.ledger.list(ctx.model_name)
        Console.emit([r.summary() for r in records], args.json,
                     "\n".join(f"{r.request_id}  {r.status:<10}  classes {r.classes}  version {r.version or '-'}  "
                               f"{r.submitted_at}" for r in records) or "no requests")
        return ExitCode.OK
    record = ctx.ledger.get(args.request_id, args.model or None)
    Console.emit(record.to_json(), args.json, _line(record.summary()))
    return ExitCode.OK


def process(args: argparse.Namespace) -> int:
    ctx = _context(args)
    ctx.registry.require_champion()
    from flows.deletion import process_pending

    console_without_tracebacks()
    return _finish(process_pending(model_name=ctx.model_name, params_path=str(ctx.settings.params_path)),
                   args.json, one=False)


def erasures(args: argparse.Namespace) -> int:
    if args.write:
        return _write_erasure_set(args)
    ctx = _context(args)
    entries = ctx.erasures.list(ctx.model_name)
    Console.emit([e.to_json() for e in entries], args.json,
                 "\n".join(f"class {e.class_id}  erased by {e.request_id} in version {e.version} at {e.erased_at}"
                           for e in entries) or f"'{ctx.model_name}' has erased no class")
    return ExitCode.OK


def _write_erasure_set(args: argparse.Namespace) -> int:
    """`dvc repro`'s first stage: the model's erased classes into a file that `prepare` depends on.
    Without the stack (a fresh clone, `lau reproduce`, LAU_ERASURE_RECORD=off) it writes an empty
    set, says so in one line on stderr, and succeeds: the pipeline then runs on params.yaml alone."""
    import json
    from pathlib import Path

    model = args.model or load_cli_params().registry.model_name
    content = {"model": model, "erased_classes": [], "read": False}
    try:
        if os.environ.get("LAU_ERASURE_RECORD", "").lower() == "off":
            raise InfraError("LAU_ERASURE_RECORD=off")
        ctx = _context(args)
        content = {"model": model, "erased_classes": list(ctx.erasures.classes(model)), "read": True}
    except (InfraError, BadInput) as err:
        print(f"lau erasures: could not read the erasure record of '{model}' ({str(err).splitlines()[0]}); "
              "params.yaml's data.excluded_classes alone decide what is left out", file=sys.stderr)
    path = Path(args.write)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, indent=2, sort_keys=True) + "\n"
    if not path.is_file() or path.read_text() != text:  # same bytes: `prepare` does not rerun
        path.write_text(text)
    return ExitCode.OK


def dashboard(args: argparse.Namespace) -> int:
    """The ops dashboard against whatever services the environment names (read-only)."""
    port = args.port if args.port is not None else int(os.environ.get("LAU_DASHBOARD_PORT", "8050") or 8050)
    if not 0 <= port <= 65535:
        raise BadInput(f"--port: expected a port number, 0 to 65535, got {port}")
    from dashboard import serve as serve_dashboard

    try:
        serve_dashboard(args.host, port, args.model, params_path())
    except OSError as err:
        raise InfraError(f"cannot listen on {args.host}:{port} ({err.strerror or err})") from None
    return ExitCode.OK


def serve(args: argparse.Namespace) -> int:
    ctx = _context(args)
    from flows.deployments import serve_deployments

    if args.poll < 0:
        raise BadInput(f"--poll must be >= 0 seconds, got {args.poll}")
    serve_deployments(ctx, cron=args.cron, interval=args.interval, poll_s=args.poll or None)
    return ExitCode.OK


def report(args: argparse.Namespace) -> int:
    ctx = _context(args)
    if args.id.isdigit():
        uri = ctx.registry.get(args.id).tag("report_uri")
        if not uri:
            raise BadInput(f"version {args.id} of '{ctx.model_name}' has no audit report (an original model)")
    else:
        uri = ctx.ledger.get(args.id, args.model or None).report_uri
        if not uri:
            raise BadInput(f"request {args.id} has no report yet (status pending or running)")
    if not args.print:
        Console.out(uri)
        return ExitCode.OK
    from tasks.reports import read_report

    text = read_report(ctx, uri, "md")
    if text is None:
        raise InfraError(f"the report at {uri} is missing from S3")
    Console.out(text)
    return ExitCode.OK


def reproduce(args: argparse.Namespace) -> int:
    from cli.reproduce import reproduce_version

    ctx = _context(args)
    result = reproduce_version(ctx, args.version, args.workdir)
    Console.emit(result, args.json, "\n".join([f"version {args.version}: {'MATCH' if result['match'] else 'MISMATCH'}",
                                               *result["mismatches"]]))
    return ExitCode.OK if result["match"] else ExitCode.REJECTED


def params_path() -> str:
    """The params file of this invocation (--params, else $LAU_PARAMS, else ./params.yaml)."""
    return os.environ.get("LAU_PARAMS", "params.yaml")


def load_cli_params():  # noqa: ANN201 - lau.config.Params
    return load_params(params_path())
