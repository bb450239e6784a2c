"""What one call costs the stack's servers in CPU, the figures behind the warm deletion's design
(docs/results.md): an MLflow alias read, and a Prefect task run (its state events and records).

    source .stack/env
    lau train --model M          # any registered model with a champion
    python -m bench.server_cpu --model M

Reads each server's CPU seconds (user + system) from /proc/<pid>/stat before and after: 200 alias
reads; 100 empty task runs in one flow, minus the Prefect server's idle CPU over the same time.
Run it on a quiet machine, on the machine the stack runs on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def cpu_s(pattern: str) -> float:
    """CPU seconds (user + system) of the process whose command line matches ``pattern``."""
    pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout.split()
    if not pids:
        raise SystemExit(f"no process matches '{pattern}': is the stack up (`make up`)?")
    fields = open(f"/proc/{pids[0]}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115 - one read
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alias_read_ms(model: str, reads: int = 200) -> float:
    from mlflow import MlflowClient

    client = MlflowClient()
    try:  # the model must exist and be readable: fail before timing
        client.get_model_version_by_alias(model, "champion")
    except Exception as err:  # noqa: BLE001 - one line, whatever MLflow raised
        raise SystemExit(f"cannot read {model}@champion: {str(err).splitlines()[0][:200]}") from None
    before = cpu_s("uvicorn.*mlflow")
    for _ in range(reads):
        client.get_model_version_by_alias(model, "champion")
    return (cpu_s("uvicorn.*mlflow") - before) / reads * 1000


def task_run_ms(runs: int = 100, idle_s: float = 10) -> float:
    from prefect import flow, task

    @task
    def noop(x: int) -> int:
        return x

    @flow
    def empty_tasks() -> None:
        for i in range(runs):
            noop(i)

    server = "prefect server start"
    idle = cpu_s(server)
    time.sleep(idle_s)
    idle = (cpu_s(server) - idle) / idle_s
    before, start = cpu_s(server), time.monotonic()
    empty_tasks()
    time.sleep(5)  # the server processes the runs' events after the flow returns
    return (cpu_s(server) - before - idle * (time.monotonic() - start)) / runs * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server_cpu")
    parser.add_argument("--model", required=True, help="a registered model with a champion alias")
    args = parser.parse_args(argv)
    print(f"MLflow server CPU per alias read: {alias_read_ms(args.model):.1f} ms")
    print(f"Prefect server CPU per task run: {task_run_ms():.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
