"""`make demo`: train the default model, register it as champion, forget one class through the
deletion flow, and say where to look. Each run registers a new model (``demo-<time>``), so the
demo starts from a model that has erased nothing, whatever earlier runs erased."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from cli.output import ExitCode, fail
from lau.errors import BadInput
from tasks.settings import InfraError, require_stack

DEMO_CLASS = 3


def main() -> int:
    demo_dir = Path(os.environ.get("LAU_STACK_DIR", ".stack")) / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    stdout = sys.stdout  # the summary goes here; MLflow's and Prefect's chatter goes to stderr
    sys.stdout = sys.stderr
    try:
        require_stack()
        return run(Path(os.environ.get("LAU_PARAMS", "params.yaml")), demo_dir, stdout)
    except BadInput as err:
        return fail(f"demo: {err}", ExitCode.BAD_INPUT)
    except InfraError as err:
        return fail(f"demo: infrastructure failure: {err}", ExitCode.INFRA)
    finally:
        sys.stdout = stdout


def run(params_path: Path, demo_dir: Path, stdout=sys.stdout) -> int:  # noqa: ANN001
    """Train a new model ``demo-<time>``, forget DEMO_CLASS, print where to look."""
    from flows.deletion import deletion
    from flows.train import train_flow
    from tasks.context import Context
    from tasks.reports import read_report

    start = time.perf_counter()
    ctx = Context.load(f"demo-{time.strftime('%Y%m%d-%H%M%S')}", params_path=str(params_path))
    say(f"1/3 training the default model ({ctx.params.model.arch} on {ctx.params.data.dataset}) "
        f"and registering it as '{ctx.model_name}'@{ctx.params.registry.alias} ...")
    trained = train_flow(model_name=ctx.model_name, params_path=str(params_path))
    say(f"2/3 forgetting class {DEMO_CLASS} through the deletion flow ...")
    request = ctx.ledger.add(ctx.model_name, [DEMO_CLASS], "make demo")
    summary = deletion(request.request_id, model_name=ctx.model_name, params_path=str(params_path))
    say("3/3 done")
    report_text = read_report(ctx, summary["report_uri"], "md") if summary.get("report_uri") else None
    local_report = demo_dir / "report.md"
    if report_text:
        local_report.write_text(report_text)
    mlflow_ui = os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    prefect_ui = os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api").removesuffix("/api")
    metrics = summary.get("metrics") or {}
    lines = [
        "",
        f"Verdict:        {summary['status'].upper()} (request {summary['request_id']})",
        f"Model:          {ctx.model_name}: version {trained['version']} trained "
        f"(test accuracy {trained['metrics'].get('test_acc')} %, gate {trained['status']}), "
        f"version {summary.get('version') or '-'} is now '{ctx.params.registry.alias}'",
        f"Forgotten:      classes {summary.get('forgotten_classes')}: forget_acc {metrics.get('forget_acc')} %, "
        f"test_forget_acc {metrics.get('test_forget_acc')} %, test_retain_acc {metrics.get('test_retain_acc')} % "
        f"(drop {metrics.get('retain_drop')} points)",
        f"LAU:            {summary['timings'].get('unlearn_s')} s of unlearning; deletion flow "
        f"{summary['timings'].get('total_s')} s end to end",
        f"MLflow UI:      {mlflow_ui}/#/models/{ctx.model_name}",
        f"Prefect UI:     {prefect_ui}/runs",
        f"Audit report:   {summary.get('report_uri')} (copy: {local_report})",
        f"Ledger:         .venv/bin/lau request list --model {ctx.model_name}   (after `source .stack/env`)",
        f"Erasures:       .venv/bin/lau erasures --model {ctx.model_name}   (every later `lau train` of this "
        "model leaves them out)",
        f"Demo time:      {time.perf_counter() - start:.0f} s",
    ]
    print("\n".join(lines), file=stdout)
    return 0 if summary["status"] == "registered" else 1


def say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
