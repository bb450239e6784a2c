"""What each `lau` command does (flows.cli parses and maps errors to exit codes)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flows.cli import (
    EXIT_BAD_INPUT,
    EXIT_INFRA,
    EXIT_OK,
    EXIT_REJECTED,
    console_without_tracebacks,
    emit,
    out,
    parse_classes,
    parse_drop,
)
from lau.errors import BadInput


def _context(args: argparse.Namespace):  # noqa: ANN202 - tasks.common.Context
    from tasks.common import Context
    from tasks.settings import require_stack

    require_stack()
    return Context.load(getattr(args, "model", None))


def _validate(ctx: Any, classes: list[int]) -> None:
    """Refuse a request before it is filed: unknown model, unknown class, already forgotten."""
    from lau.data import check_classes

    champion = ctx.registry.require_champion()
    num_classes = int(champion.tag("num_classes", "0"))
    check_classes(classes, num_classes, what="--classes", excluded=champion.excluded)
    repeated = sorted(set(classes) & set(champion.forgotten))
    if repeated:
        raise BadInput(f"--classes: {repeated} already forgotten by version {champion.version} of '{ctx.model_name}'")
    if len(set(classes) | set(champion.forgotten) | set(champion.excluded)) >= num_classes:
        raise BadInput(f"--classes: forgetting {classes} would leave '{ctx.model_name}' no class to serve")


def _exit_for(summary: dict) -> int:
    status = summary["status"]
    if status == "registered":
        return EXIT_OK
    if status == "rejected":
        return EXIT_REJECTED if (summary.get("error") or "").startswith("gate failed") else EXIT_BAD_INPUT
    return EXIT_INFRA


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


def train(args: argparse.Namespace) -> int:
    if args.epochs is not None and args.epochs <= 0:
        raise BadInput(f"--epochs must be > 0, got {args.epochs}")
    ctx = _context(args)
    if args.dataset:
        from lau.data import DATASETS

        if args.dataset not in DATASETS:
            raise BadInput(f"unknown dataset '{args.dataset}'; choose one of: {', '.join(DATASETS)}")
    if args.arch:
        from lau.models import MODELS

        if args.arch not in MODELS:
            raise BadInput(f"unknown arch '{args.arch}'; choose one of: {', '.join(MODELS)}")
    from flows.train import train_flow  # after the checks: bad input fails before the heavy imports

    console_without_tracebacks()
    result = train_flow(model_name=ctx.model_name, dataset=args.dataset, arch=args.arch, epochs=args.epochs,
                        params_path=str(ctx.settings.params_path))
    emit(result, args.json, f"registered version {result['version']} of {result['model']} as champion: "
                            f"test_acc {result['metrics'].get('test_acc')}")
    return EXIT_OK


def forget(args: argparse.Namespace) -> int:
    classes = parse_classes(args.classes)
    drop = parse_drop(args.max_retain_drop) if args.max_retain_drop is not None else None
    ctx = _context(args)
    from tasks.lineage import verify_champion  # a champion promoted by hand: exit 3 before filing

    verify_champion(ctx.registry, ctx.storage)
    _validate(ctx, classes)
    # a champion whose checkpoint is damaged cannot be unlearned: say so before filing anything
    ctx.registry.load(ctx.registry.require_champion(), ctx.settings.work_dir)
    from flows.deletion import deletion  # after the checks: bad input fails before the heavy imports

    console_without_tracebacks()
    request = ctx.ledger.add(ctx.model_name, classes, args.reason)
    print(f"filed {request.request_id} for classes {classes}", file=sys.stderr)
    summary = deletion(request.request_id, model_name=ctx.model_name, max_retain_drop=drop,
                       params_path=str(ctx.settings.params_path))
    emit(summary, args.json, _line(summary))
    return _exit_for(summary)


def request(args: argparse.Namespace) -> int:
    ctx = _context(args)
    if args.request_command == "add":
        classes = parse_classes(args.classes)
        _validate(ctx, classes)
        filed = ctx.ledger.add(ctx.model_name, classes, args.reason)
        emit(filed.summary(), args.json, f"filed {filed.request_id} for classes {classes} (pending)")
        return EXIT_OK
    if args.request_command == "list":
        records = ctx.ledger.list(ctx.model_name)
        emit([r.summary() for r in records], args.json,
             "\n".join(f"{r.request_id}  {r.status:<10}  classes {r.classes}  version {r.version or '-'}  "
                       f"{r.submitted_at}" for r in records) or "no requests")
        return EXIT_OK
    record = ctx.ledger.get(args.request_id, args.model or None)
    emit(record.to_json(), args.json, _line(record.summary()))
    return EXIT_OK


def process(args: argparse.Namespace) -> int:
    ctx = _context(args)
    ctx.registry.require_champion()
    from flows.deletion import process_pending

    console_without_tracebacks()
    summaries = process_pending(model_name=ctx.model_name, params_path=str(ctx.settings.params_path))
    emit(summaries, args.json, "\n".join(_line(s) for s in summaries) or "no pending requests")
    codes = [_exit_for(s) for s in summaries]
    return max(codes) if codes else EXIT_OK


def serve(args: argparse.Namespace) -> int:
    from flows.serve import serve_deployments

    ctx = _context(args)
    serve_deployments(ctx, cron=args.cron, interval=args.interval)
    return EXIT_OK


def bench(args: argparse.Namespace) -> int:
    from lau.bench import check_methods, run_bench, speedups, write_outputs

    if args.chain:
        return _chain(args)
    methods = check_methods(tuple(m.strip() for m in args.methods.split(",") if m.strip()))
    classes = tuple(parse_classes(args.classes))
    params = _bench_params(args)
    class_sets = [classes]
    if args.each_class:
        from lau.data import load_dataset

        n = len(load_dataset(params.data.dataset, params.data.root, params.data.image_size).class_names)
        class_sets += [(c,) for c in range(n) if (c,) != classes and c not in params.data.excluded_classes]
    result = run_bench(params, methods, class_sets)
    paths = write_outputs(result, args.json_path)
    print(paths["table"].read_text(), file=sys.stderr)
    for line in speedups(result):
        print(f"LAU speed-up {line}", file=sys.stderr)
    print(f"wrote {paths['json']}, {paths['table']}, {paths['plot']}", file=sys.stderr)
    return EXIT_OK


def _bench_params(args: argparse.Namespace):  # noqa: ANN202 - lau.config.Params, imported lazily
    import dataclasses

    from lau.config import load_params

    params = load_params(_params_path())
    if args.depth is not None:
        if args.depth < 1:
            from lau.errors import BadInput

            raise BadInput(f"--depth must be 1 or more, got {args.depth}")
        params = dataclasses.replace(params, unlearn=dataclasses.replace(params.unlearn, depth=args.depth))
    return params


def _chain(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lau.bench import run_chain

    result = run_chain(_bench_params(args), parse_classes(args.chain))
    path = Path(args.json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| forgotten | steps | converged | unlearn_s | forget_acc | test_forget_acc | test_retain_acc | retain_drop |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['forgotten']} | {r['steps']} | {r['converged']} | {r['unlearn_s']} | {r['forget_acc']} | "
              f"{r['test_forget_acc']} | {r['test_retain_acc']:.2f} | {r['retain_drop']:.2f} |" for r in result["rows"]]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    return EXIT_OK


def report(args: argparse.Namespace) -> int:
    from tasks.reports import read_report

    ctx = _context(args)
    if args.id.isdigit():
        uri = ctx.registry.get(args.id).tag("report_uri")
        if not uri:
            raise BadInput(f"version {args.id} of '{ctx.model_name}' has no audit report (an original model)")
    else:
        uri = ctx.ledger.get(args.id, args.model or None).report_uri
        if not uri:
            raise BadInput(f"request {args.id} has no report yet (status pending or running)")
    if args.print:
        text = read_report(ctx, uri, "md")
        if text is None:
            print(f"lau: the report at {uri} is missing from S3", file=sys.stderr)
            return EXIT_INFRA
        out(text)
    else:
        out(uri)
    return EXIT_OK


def reproduce(args: argparse.Namespace) -> int:
    from flows.reproduce import reproduce_version

    ctx = _context(args)
    result = reproduce_version(ctx, args.version, args.workdir)
    emit(result, args.json, "\n".join([f"version {args.version}: {'MATCH' if result['match'] else 'MISMATCH'}",
                                       *result["mismatches"]]))
    return EXIT_OK if result["match"] else EXIT_REJECTED


def _params_path() -> str:
    import os

    return os.environ.get("LAU_PARAMS", "params.yaml")

