"""`lau` for the tests, without paying its imports each time: a fork server.

Every `lau` command a test runs used to start a new interpreter that imported torch, MLflow and
Prefect again (about 5 s of CPU each, several hundred commands in ``make test``). The server below
imports them once; each command is then a ``fork()`` of it that sets the test's argv, environment,
working directory and standard streams and calls the real entry point (``cli.main.run``: the same
function the ``lau`` console script calls, which ends the process with ``os._exit``). Each command is
still its own process (its own pid and session, killable, with its exit status), so crash and
signal tests behave as with the console script.

What differs from the console script: the modules are imported before the command's environment is
set. Nothing of ours reads the environment at import time (``tests/code/test_layout.py`` checks);
what a module sets at import (``os.environ.setdefault``) is set in each command's environment too;
Prefect's settings, which Prefect reads at import, are refreshed from the command's environment. ``LAU_TESTS_COLD=1`` runs every command through the console script instead.

The server never runs torch, starts no thread and holds no lock when it forks.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LAU = str(Path(sys.executable).with_name("lau"))
# In the order a `lau` process imports them: Prefect's logging set-up (on the import of the flows)
# must come before MLflow's pytorch flavour, which adds a plain handler to the root logger.
PRELOAD = ("cli.main", "flows.deletion", "flows.train", "flows.lineage", "flows.adopt", "flows.deployments",
           "tasks.registry", "tasks.reports", "lau.report", "lau.stages", "mlflow.pytorch", "torchvision", "sklearn.linear_model",
           "sklearn.svm", "boto3")


def cold() -> bool:
    return os.environ.get("LAU_TESTS_COLD", "") not in ("", "0")


# ---------------------------------------------------------------- the server (its own process)


def serve(path: str) -> None:
    """Import, listen on the Unix socket ``path``, fork one child per command, report exit statuses."""
    import importlib

    before = dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
    # what modules set at import (os.environ.setdefault, e.g. the MLflow client's retries): each
    # command gets it too, as its own import would have set it
    defaults = {k: v for k, v in os.environ.items() if before.get(k) != v}
    _write_manifest(os.path.join(os.path.dirname(path), "manifest.json"))
    assert threading.active_count() == 1, [t.name for t in threading.enumerate()]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection that asked for it
    while True:
        readable, _, _ = select.select([listener], [], [], 0.02)
        if readable:
            conn, _ = listener.accept()
            pid = _start(conn, listener, defaults)
            if pid:
                waiting[pid] = conn
        _reap(waiting)


def _write_manifest(path: str) -> None:
    """sha256 of every Python file of the repository's packages this server loaded (relative path ->
    digest): tests/warm_python.py forks a stage only in a checkout holding exactly these files."""
    import hashlib

    packages = {name.split(".")[0] for name, module in list(sys.modules.items())
                if (getattr(module, "__file__", None) or "").startswith(str(REPO) + os.sep)} - {"tests"}
    manifest = {}
    for package in sorted(packages):
        for file in sorted((REPO / package).rglob("*.py")):
            manifest[file.relative_to(REPO).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    Path(path).write_text(json.dumps(manifest))


def _start(conn: socket.socket, listener: socket.socket, defaults: dict[str, str]) -> int | None:
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    if len(fds) != 3:
        conn.close()
        return None
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:  # the command
        listener.close()
        conn.close()
        _child({**request, "env": {**defaults, **request["env"]}}, fds)  # never returns
    for fd in fds:
        os.close(fd)
    conn.sendall(f"{pid}\n".encode())
    return pid


def _child(request: dict[str, Any], fds: list[int]) -> None:
    try:
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # sys.stdout and sys.stderr stay the objects the logging handlers hold; they write to the fds
        if request["env"].get("PYTHONUNBUFFERED"):
            sys.stdout.reconfigure(write_through=True)
        import prefect.context

        prefect.context.refresh_global_settings_context()
        if request.get("module"):  # `python -m MODULE ARGS` (tests/warm_python.py), run from the checkout
            _run_module(request["module"])
        from cli.main import run

        run()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - what an interpreter would print, then exit 1
        import traceback

        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _run_module(module: str) -> None:
    """What ``python -m module`` does after its imports, then the interpreter's exit steps."""
    import atexit
    import runpy

    if sys.path and sys.path[0] == str(REPO):
        sys.path[0] = os.getcwd()
    sys.modules.pop(module, None)  # as in a new interpreter: the module runs only as __main__
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    threading._shutdown()  # noqa: SLF001 - as cli.main.run: the interpreter's own first exit step
    atexit._run_exitfuncs()  # noqa: SLF001
    raise SystemExit(code)


def python_dir() -> str:
    """A directory holding a ``python`` that forks ``python -m lau.stages|cli.main`` from the server
    (tests/warm_python.py); put it first on PATH with ``LAU_FORK_SOCKET=python_socket()``."""
    server = _get_server()
    shim = Path(server.dir) / "bin" / "python"
    if not shim.exists():
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{REPO / "tests" / "warm_python.py"}" "$@"\n')
        shim.chmod(0o755)
    return str(shim.parent)


def python_socket() -> str:
    return _get_server().path


def _reap(waiting: dict[int, socket.socket]) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                conn.sendall(f"{code}\n".encode())
            conn.close()


# ---------------------------------------------------------------- the client (in pytest)


class _Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="lau-fork-")
        self.path = os.path.join(self.dir, "socket")
        env = {k: v for k, v in os.environ.items() if k != "LAU_FAULT"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.warm_lau", self.path], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        ready = self.proc.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"the lau fork server did not start (exit {self.proc.wait()})")
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(self.dir)


_server: _Server | None = None
_server_lock = threading.Lock()


def _get_server() -> _Server:
    global _server
    with _server_lock:
        if _server is None or _server.proc.poll() is not None:
            _server = _Server()
        return _server


class WarmPopen:
    """The part of ``subprocess.Popen`` the tests use, for a `lau` command forked by the server.

    ``argv[0]`` must be the `lau` console script; the command runs in its own session (as with
    ``start_new_session=True``), so ``os.killpg(proc.pid, ...)`` reaches it and what it starts."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 text: bool = True, stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE,
                 bufsize: int = -1) -> None:
        server = _get_server()
        self.args = argv
        self.returncode: int | None = None
        ends = [os.open(os.devnull, os.O_RDONLY)]
        self.stdout = self.stderr = None
        for name, how in (("stdout", stdout), ("stderr", stderr)):
            if how == subprocess.PIPE:
                read, write = os.pipe()
                ends.append(write)
                stream = os.fdopen(read, "r" if text else "rb", buffering=bufsize if text else -1)
                setattr(self, name, stream)
            elif how == subprocess.STDOUT:
                ends.append(os.dup(ends[1]))
            elif how is None or how == subprocess.DEVNULL:
                ends.append(os.open(os.devnull, os.O_WRONLY))
            else:  # a file object
                ends.append(os.dup(how.fileno()))
        request = {"argv": list(argv), "env": dict(os.environ if env is None else env),
                   "cwd": str(cwd or os.getcwd())}
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._conn.connect(server.path)
            socket.send_fds(self._conn, [json.dumps(request).encode()], ends)
        finally:
            for fd in ends:
                os.close(fd)
        self._buffer = b""
        self.pid = int(self._line())

    def _line(self) -> str:
        """One line of the server's reply (the pid, then the exit status), read without reading ahead."""
        while b"\n" not in self._buffer:
            data = self._conn.recv(64)
            if not data:
                return ""
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def _ready(self, timeout: float | None) -> bool:
        return b"\n" in self._buffer or bool(select.select([self._conn], [], [], timeout)[0])

    def poll(self) -> int | None:
        if self.returncode is None and self._ready(0):
            self._read_code()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._ready(timeout):
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._read_code()
        return self.returncode

    def _read_code(self) -> None:
        line = self._line()
        self.returncode = int(line) if line.strip() else -signal.SIGKILL  # the server died with it
        self._conn.close()

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Both pipes to their end, then the exit status (``TimeoutExpired`` as subprocess raises it)."""
        chunks: dict[Any, list] = {s: [] for s in (self.stdout, self.stderr) if s is not None}
        deadline = None if timeout is None else time.monotonic() + timeout
        open_streams = list(chunks)
        while open_streams:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout, output="".join(chunks.get(self.stdout, [])),
                                                stderr="".join(chunks.get(self.stderr, [])))
            for stream in select.select(open_streams, [], [], left)[0]:
                data = os.read(stream.fileno(), 1 << 16)
                if data:
                    chunks[stream].append(data.decode(errors="replace"))
                else:
                    open_streams.remove(stream)
        self.wait(None if deadline is None else max(0.1, deadline - time.monotonic()))
        for stream in chunks:
            stream.close()
        return "".join(chunks.get(self.stdout, [])), "".join(chunks.get(self.stderr, []))


def popen(argv: list[str], **kwargs: Any) -> Any:
    """``subprocess.Popen`` for a `lau` command: forked by the server, or the console script when cold."""
    if cold() or Path(argv[0]).name != "lau":
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(argv, **kwargs)
    kwargs.pop("start_new_session", None)
    return WarmPopen(argv, **kwargs)


def run(argv: list[str], *, timeout: float | None = None, env: dict[str, str] | None = None,
        cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, capture_output=True, text=True, ...)`` for a `lau` command."""
    if cold() or Path(argv[0]).name != "lau":
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    proc = WarmPopen(argv, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


if __name__ == "__main__":
    serve(sys.argv[1])
