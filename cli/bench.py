"""`lau bench`: every benchmark of the product behind one command.

    lau bench [--methods ..] [--classes 3] [--each-class]   unlearning methods side by side (no stack)
              [--baseline-sets N] [--then-chain 3,5,1]      baselines on N class sets; a chain on the same original
    lau bench --chain 3,5,1,8,7                               sequential LAU deletions on one lineage
    lau bench --scale [--sizes ..] [--dim 512] [--num-classes 10,100]   synthetic cached features
    lau bench --flow [--via forget|process] --classes 3,5     deletion flows end to end (needs the stack)
    lau bench --extraction [--workers 1,2]                    feature extraction on the task runners

Engine benchmarks live in lau/bench.py (and lau/scale.py); the orchestration ones in bench/.
Outputs: the JSON at --json PATH, a markdown table beside it (and a plot where there is one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from cli.output import ExitCode
from cli.parse import parse_classes, parse_ints
from lau.config import Params, load_params
from lau.errors import BadInput


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: unlearning methods side by side (default), --chain, "
                                     "--scale, --flow, --extraction")
    p.add_argument("--methods", default="lau,retrain,finetune,neggrad,random_label,boundary_shrink")
    p.add_argument("--classes", default="3", help="class ids forgotten together, e.g. 3 or 3,5")
    p.add_argument("--each-class", action="store_true", help="also run every single class of the dataset")
    p.add_argument("--baseline-sets", type=int, default=None,
                   help="run the image-level baselines (retrain, ...) on the first N class sets only")
    p.add_argument("--then-chain", default=None,
                   help="also run these sequential LAU deletions on the same original, e.g. 3,5,1,8,7")
    p.add_argument("--dataset", default=None, help="override data.dataset")
    p.add_argument("--arch", default=None, help="override model.arch")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--depth", type=int, default=None,
                   help="override unlearn.depth: trailing blocks LAU trains (1 = the paper)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--chain", default=None, help="sequential LAU deletions on one lineage, e.g. 3,5,1,8")
    mode.add_argument("--scale", action="store_true", help="LAU + evaluation + gate on synthetic cached features")
    mode.add_argument("--flow", action="store_true", help="deletion flows timed end to end on the stack")
    mode.add_argument("--extraction", action="store_true", help="feature extraction: one process vs task runners")
    p.add_argument("--sizes", default="5000,50000,200000,500000", help="--scale: training rows")
    p.add_argument("--dim", type=int, default=512, help="--scale: feature dimension")
    p.add_argument("--num-classes", default="10,100", help="--scale: class counts")
    p.add_argument("--via", choices=("forget", "process"), default="forget",
                   help="--flow: one `lau forget` process per class, or one `lau process` pass")
    p.add_argument("--workers", default="1,2", help="--extraction: Dask worker counts")
    p.add_argument("--json", dest="json_path", default="docs/bench/out.json", help="where the JSON goes")


def bench(args: argparse.Namespace) -> int:
    if args.flow:
        from bench.flows import time_flows

        return time_flows(args.classes, args.via, args.json_path, arch=args.arch, dataset=args.dataset,
                          epochs=args.epochs)
    if args.extraction:
        from bench.extraction import run_extraction_bench

        return run_extraction_bench(parse_ints(args.workers, "--workers"), args.json_path,
                                    dataset=args.dataset or "mnist5k", arch=args.arch or "cnn")
    if args.scale:
        return _scale(args)
    if args.chain:
        return _chain(args)
    return _methods(args)


def bench_params(args: argparse.Namespace) -> Params:
    """params.yaml with the command line's overrides (checked like the file)."""
    from cli.commands import params_path

    params = load_params(params_path())
    if args.dataset:
        params = params.replace("data", dataset=args.dataset)
    if args.arch:
        params = params.replace("model", arch=args.arch)
    if args.epochs is not None:
        params = params.replace("train", epochs=args.epochs)
    if args.depth is not None:
        if args.depth < 1:
            raise BadInput(f"--depth must be 1 or more, got {args.depth}")
        params = dataclasses.replace(params, unlearn=dataclasses.replace(params.unlearn, depth=args.depth))
    return params


def _methods(args: argparse.Namespace) -> int:
    from lau.bench import check_methods, run_bench, speedups, write_outputs
    from lau.data import load_dataset

    methods = check_methods(tuple(m.strip() for m in args.methods.split(",") if m.strip()))
    classes = tuple(parse_classes(args.classes))
    params = bench_params(args)
    class_sets = [classes]
    if args.each_class:
        n = len(load_dataset(params.data.dataset, params.data.root, params.data.image_size).class_names)
        class_sets += [(c,) for c in range(n) if (c,) != classes and c not in params.data.excluded_classes]
    if args.baseline_sets is not None and args.baseline_sets < 0:
        raise BadInput(f"--baseline-sets must be 0 or more, got {args.baseline_sets}")
    chain = parse_classes(args.then_chain, "--then-chain") if args.then_chain else None
    result = run_bench(params, methods, class_sets, baseline_sets=args.baseline_sets, chain=chain)
    paths = write_outputs(result, args.json_path)
    print(paths["table"].read_text(), file=sys.stderr)
    for line in speedups(result):
        print(f"LAU speed-up {line}", file=sys.stderr)
    print(f"wrote {paths['json']}, {paths['table']}, {paths['plot']}", file=sys.stderr)
    return ExitCode.OK


def _chain(args: argparse.Namespace) -> int:
    from lau.bench import run_chain

    result = run_chain(bench_params(args), parse_classes(args.chain, "--chain"))
    path = Path(args.json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| forgotten | steps | converged | unlearn_s | forget_acc | test_forget_acc | test_retain_acc | retain_drop |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['forgotten']} | {r['steps']} | {r['converged']} | {r['unlearn_s']} | {r['forget_acc']} | "
              f"{r['test_forget_acc']} | {r['test_retain_acc']:.2f} | {r['retain_drop']:.2f} |" for r in result["rows"]]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    return ExitCode.OK


def _scale(args: argparse.Namespace) -> int:
    """Synthetic cached features of each size: LAU, evaluation and gate time, peak memory."""
    from lau.scale import run_scale, write_scale_outputs

    if args.dim <= 0:
        raise BadInput(f"--dim must be > 0, got {args.dim}")
    result = run_scale(tuple(parse_ints(args.sizes, "--sizes")), args.dim,
                       tuple(parse_ints(args.num_classes, "--num-classes")), 0, params=bench_params(args))
    paths = write_scale_outputs(result, args.json_path)
    print(paths["table"].read_text(), file=sys.stderr)
    print(f"wrote {paths['json']}, {paths['table']}", file=sys.stderr)
    return ExitCode.OK
