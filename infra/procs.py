"""Daemons for the local stack: each runs in a session of its own, is found again through its pid
file, and is stopped together with every process it spawned. Linux only (reads /proc)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple


class ProcInfo(NamedTuple):
    state: str  # R, S, ... Z for a zombie
    ppid: int
    session: int
    start: int  # clock ticks after boot: tells a pid from a later process reusing the number

    @property
    def alive(self) -> bool:
        return self.state not in "ZX"


def proc_info(pid: int) -> ProcInfo | None:
    """What /proc/PID/stat says about a process, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return ProcInfo(fields[0], int(fields[1]), int(fields[3]), int(fields[19]))


def live_processes() -> dict[int, ProcInfo]:
    """Every process that is not a zombie, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := proc_info(int(entry.name))) and info.alive:
            found[int(entry.name)] = info
    return found


def session_members(leader: int) -> set[int]:
    """Live processes of the session a daemon was started in, and all their descendants."""
    procs = live_processes()
    members = {pid for pid, info in procs.items() if info.session == leader}
    frontier = set(members)
    while frontier:  # children that left the session are still found through their parent
        frontier = {pid for pid, info in procs.items() if info.ppid in frontier} - members
        members |= frontier
    return members


def start_daemon(
    argv: list[str], *, log_file: Path, pid_file: Path, env: Mapping[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    """Start argv in a new session, stdout and stderr appended to log_file; write pid_file."""
    with log_file.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    info = proc_info(proc.pid)
    pid_file.write_text(f"{proc.pid} {info.start if info else 0}\n")
    return proc


def read_pid_file(pid_file: Path) -> tuple[int, int] | None:
    """(pid, start time) as start_daemon wrote them, or None."""
    try:
        pid, start = pid_file.read_text().split()
        return int(pid), int(start)
    except (OSError, ValueError):
        return None


def running_pid(pid_file: Path) -> int | None:
    """The daemon's pid while its main process lives. The pid file is removed once nothing of the
    daemon is left (or its pid now belongs to another process)."""
    recorded = read_pid_file(pid_file)
    if recorded is None:
        return None
    pid, start = recorded
    info = proc_info(pid)
    if info and info.start == start and info.alive:
        return pid
    if (info is not None and info.start != start) or not session_members(pid):
        pid_file.unlink(missing_ok=True)
    return None


def stop_daemon(pid_file: Path, grace_s: float) -> bool:
    """SIGTERM the daemon's whole process tree, SIGKILL what is left after grace_s; remove the pid
    file. Returns whether there was anything to stop."""
    recorded = read_pid_file(pid_file)
    if recorded is None:
        return False
    leader, start = recorded
    info = proc_info(leader)
    stopped = False
    if info is None or info.start == start:  # else the pid belongs to another process now
        for sig, grace in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            stopped |= signal_until_gone(leader, sig, grace)
    pid_file.unlink(missing_ok=True)
    return stopped


def signal_until_gone(leader: int, sig: signal.Signals, grace_s: float) -> bool:
    """Send sig once to every process of the leader's tree (late children too) until none is left
    or grace_s has passed. Returns whether there was anything to signal."""
    signalled: set[int] = set()
    deadline = time.monotonic() + grace_s
    while (targets := session_members(leader)) and time.monotonic() < deadline:
        for pid in targets - signalled:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        signalled |= targets
        time.sleep(0.2)
    return bool(signalled)


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on host:port (a socket in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False
