"""`python` for the stages `dvc repro` runs in the tests: ``python -m lau.stages ...`` (and the
erasures stage's ``python -m cli.main ...``) forked by the tests' fork server (tests/warm_lau.py)
instead of a new interpreter importing torch again; anything else is the real interpreter.

Run as ``<venv python> -I -S tests/warm_python.py ARGS`` (the standard library only: it starts in
milliseconds) through the ``python`` that ``warm_lau.python_dir()`` puts first on a test's PATH.
The fork server runs the repository's code, so a stage goes warm only where the working directory
holds byte-identical copies of every Python file of the packages the server loaded (a fresh clone of
the working tree does; a clone missing a file, or with an edited one, runs cold and fails or passes
as it would). Exit status and signals are the stage's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys

WARM_MODULES = ("lau.stages", "cli.main")


def same_code(cwd: str, manifest_path: str) -> bool:
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        for relative, digest in manifest.items():
            with open(os.path.join(cwd, relative), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    return False
    except (OSError, ValueError):
        return False
    return True


def run_warm(path: str, module: str, args: list[str]) -> int:
    env = {k: v for k, v in os.environ.items() if k != "LAU_FORK_SOCKET"}
    request = {"argv": [module, *args], "module": module, "env": env, "cwd": os.getcwd()}
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
    reader = conn.makefile("r")
    pid = int(reader.readline())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: os.kill(pid, number))
    line = reader.readline()
    return int(line) if line.strip() else -signal.SIGKILL  # the server died with it


def main() -> None:
    args = sys.argv[1:]
    path = os.environ.get("LAU_FORK_SOCKET", "")
    if path and len(args) >= 2 and args[0] == "-m" and args[1] in WARM_MODULES and \
            same_code(os.getcwd(), os.path.join(os.path.dirname(path), "manifest.json")):
        code = run_warm(path, args[1], args[2:])
        if code < 0:  # killed by a signal: so is this process, as its parent would see it
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        sys.exit(code)
    os.execv(sys.executable, [sys.executable, *args])


if __name__ == "__main__":
    main()
