"""The adoption flow: a team's own torchvision or timm classifier becomes a new lineage root.

Under the model's lock: fetch the team's weights (a file, or downloaded from MLflow), then the same
steps as a trained root (flows.train.make_root): prepare the data minus every class the model has
erased, adopt the model and check it against the data, upload the data, cache the features,
evaluate, gate with the train checks, register (the engine checkpoint and the team's own module as
the MLflow pytorch model) and promote. Adoption makes version 1 of a new model; ``replace`` puts a
team's retrain (without the erased classes) through the same gate as the champion's new root.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from prefect import flow

from flows.lineage import check_champion
from flows.lock import model_lock
from flows.train import make_root
from lau.adopt import already_served
from lau.errors import BadInput
from lau.pipeline import with_adoption
from lau.utils import file_sha256
from tasks.context import Context
from tasks.registry import Version
from tasks.versions import read_champion
from tasks.weights import adopt_model, fetch_weights


@flow(name="adopt", flow_run_name="adopt {arch} as {model_name}")
def adopt_flow(arch: str, weights: str, model_name: str | None = None, head: str = "", dataset: str | None = None,
               root: str | None = None, image_size: int | None = None, mean: tuple[float, ...] = (),
               std: tuple[float, ...] = (), weights_meta: str = "", replace: bool = False,
               params_path: str | None = None) -> dict[str, Any]:
    """Adopt the team's ``arch`` with ``weights`` (a state-dict file, ``runs:/...`` or
    ``models:/...``) as ``model_name``: registered and promoted if the gate passes. The other
    arguments override params.yaml's ``model.*`` and ``data.*`` (docs/adopt.md)."""
    ctx = Context.load(model_name, params_path)
    params = with_adoption(ctx.params, arch=arch, weights=weights, head=head, weights_meta=weights_meta,
                           mean=tuple(mean), std=tuple(std), dataset=dataset, root=root, image_size=image_size)
    ctx = Context(params, ctx.settings, ctx.model_name)
    with model_lock(ctx.model_name):
        champion = read_champion(ctx)
        check_replacing(ctx, champion, replace)
        path = fetch_weights(ctx, weights)
        origin = f"{weights} sha256={file_sha256(path)}"
        return make_root(ctx, "adopt", replacing=champion, make_model=partial(adopt_model, weights=path),
                         adopted_from=origin)


def check_replacing(ctx: Context, champion: Version | None, replace: bool) -> None:
    """Adoption makes a new model; ``replace`` needs a gated champion to replace."""
    if champion is not None and not replace:
        raise BadInput(already_served(ctx.model_name, champion.version))
    if champion is None and replace:
        raise BadInput(f"--replace: '{ctx.model_name}' has no champion to replace; adopt without it")
    if champion is not None:
        check_champion(ctx, champion)
