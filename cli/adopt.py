"""`lau adopt`: register a team's own torchvision or timm classifier as version 1, champion.

Every input is checked before the flow starts, so that bad input is one line and exit 2 with
nothing registered: the architecture, the weights (read as a state dict, never unpickled; from
MLflow they are downloaded first), the head module, the preprocessing, and the data's classes and
channels against the model's head and first layer. The flow (flows/adopt.py) then does it for real.
"""

from __future__ import annotations

import argparse

from cli.output import console_without_tracebacks
from lau.errors import BadInput


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adopt", help="register a team's own torchvision/timm classifier as version 1, champion")
    p.add_argument("--arch", required=True, help="torchvision:<builder> (e.g. torchvision:resnet18) or "
                                                 "timm:<name> (e.g. timm:convnext_atto)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="the state dict: .safetensors, or .pt/.pth saved with "
                                          "torch.save(model.state_dict(), PATH)")
    source.add_argument("--from", dest="from_uri", metavar="MODEL_URI",
                        help="a state dict logged in MLflow: runs:/<run_id>/<path> or models:/<name>/<version>")
    p.add_argument("--head", default="", help="the classification module's name, e.g. fc or classifier.1 "
                                              "(default: found by name)")
    p.add_argument("--dataset", default=None, help="the data the model was trained on (default: data.dataset), "
                                                   "e.g. imagefolder with --root")
    p.add_argument("--root", default=None, help="folder of an on-disk dataset: one sub-folder per class")
    p.add_argument("--image-size", type=int, default=None,
                   help="square side the model takes (default: data.image_size, else the weights' metadata)")
    p.add_argument("--mean", nargs="+", default=None, help="per-channel input mean in [0, 1], e.g. 0.485 0.456 0.406")
    p.add_argument("--std", nargs="+", default=None, help="per-channel input std, e.g. 0.229 0.224 0.225")
    p.add_argument("--weights-meta", default="",
                   help="torchvision weights enum it was fine-tuned from (e.g. ResNet18_Weights.IMAGENET1K_V1), "
                        "for its preprocessing")
    p.add_argument("--replace", action="store_true",
                   help="the team's retrain of a model already served: a new lineage root through the same gate")
    p.add_argument("--model", default=None, help="registered model name (default: registry.model_name)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout, nothing else")


def numbers(values: list[str] | None, flag: str) -> tuple[float, ...]:
    """``--mean 0.5 0.5 0.5`` or ``--mean 0.5,0.5,0.5`` as floats."""
    items = [v for value in values or () for v in value.split(",") if v.strip()]
    try:
        return tuple(float(v) for v in items)
    except ValueError:
        raise BadInput(f"{flag}: expected numbers, got {' '.join(values or ())!r}") from None


def adopt(args: argparse.Namespace) -> int:
    from cli.commands import _context, _root_result

    if args.image_size is not None and args.image_size <= 0:
        raise BadInput(f"--image-size must be > 0, got {args.image_size}")
    mean, std = numbers(args.mean, "--mean"), numbers(args.std, "--std")
    ctx = _context(args)
    weights = args.weights or args.from_uri
    params = preflight(ctx, args, weights, mean, std)
    from flows.adopt import adopt_flow  # after the checks: bad input fails before the flow starts

    console_without_tracebacks()
    result = adopt_flow(arch=args.arch, weights=weights, model_name=ctx.model_name, head=args.head,
                        dataset=params.data.dataset, root=params.data.root, image_size=params.data.image_size,
                        mean=mean, std=std, weights_meta=args.weights_meta, replace=args.replace,
                        params_path=str(ctx.settings.params_path))
    return _root_result(result, args.json)


def preflight(ctx, args: argparse.Namespace, weights: str, mean: tuple[float, ...],  # noqa: ANN001 - Context
              std: tuple[float, ...]):  # noqa: ANN201 - lau.config.Params
    """Everything the flow would refuse, refused now: returns the params the flow will use."""
    from lau.adopt import already_served
    from lau.data import dataset_classes
    from lau.pipeline import adopt_for_data, with_adoption
    from tasks.weights import fetch_weights

    champion = ctx.registry.champion()
    if champion is not None and not args.replace:
        raise BadInput(already_served(ctx.model_name, champion.version))
    if champion is None and args.replace:
        raise BadInput(f"--replace: '{ctx.model_name}' has no champion to replace; adopt without it")
    params = with_adoption(ctx.params, arch=args.arch, weights=weights, head=args.head, weights_meta=args.weights_meta,
                           mean=mean, std=std, dataset=args.dataset, root=args.root, image_size=args.image_size)
    class_names, channels = dataset_classes(params.data)
    path = fetch_weights.fn(ctx, weights)  # the task's body: no Prefect run for a check
    adopt_for_data(params, class_names, channels, params.data.image_size, path)
    return params
