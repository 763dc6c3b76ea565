"""One process per rkconvert process that has imported torch once and forks every toolkit child from it.

A toolkit child started with `python -m` spent 1.7 s of an idle machine (2.7 s of a busy one) importing
torch, which rknn-toolkit2 imports; `diagnose`, the hybrid search and the test suite start hundreds. The
server imports numpy, onnx and torch, not rknn (the toolkit's own state is made in each child), and forks
a child per job: the child sets its log as stdout and stderr, its working folder and environment, and
runs the module as `python -m` would. Forking after those imports is safe because nothing has computed
yet: torch's thread pools start on first use, OpenBLAS stops its threads around a fork itself.

The server's parent is the rkconvert process; the jobs are the server's children, which die with it
(PR_SET_PDEATHSIG), and it ends when its request pipe closes or rkconvert is gone, however rkconvert ends.
It reports each job's pid when started and its wait status and peak memory (wait4) when it ends, as JSON
lines.

The test suite runs the CLI itself the same way (tests/cli_runner.py), from a server that has also
imported diffusers and transformers: a CLI process spends 5-7 s importing them, and the suite starts
about two hundred.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
_KILLED = signal.SIGKILL.value  # the wait status of a process killed by SIGKILL


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent `parent` dies (killed from outside, e.g. by the OOM killer or a
    matrix executor), so no orphaned toolkit build goes on holding memory and writing files; at once if it has
    died already (between the fork and now: the signal is only sent for a death after the call)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


class ForkServer:
    """The rkconvert side: start a job, see whether it has ended, kill it. Shared by the process's
    threads (the hybrid search and the relay start jobs from several); started on first use and again
    if it has died. `preload`: modules the server imports besides numpy, onnx and torch."""

    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        self._preload = preload
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._pending = b""
        self._started: list[int | str] = []
        self._running: set[int] = set()
        self._ended: dict[int, tuple[int, int]] = {}

    def start(self, module: str, args: list[str], cwd: Path, log: Path, stderr: Path | None = None,
              env: dict[str, str] | None = None) -> int:
        """The pid of a new child running `python -m module args` in `cwd`, writing to `log` (its stderr to
        `stderr` if given), in `env` (default: this process's environment now)."""
        request = {"module": module, "args": args, "cwd": str(cwd.resolve()), "stdout": str(log.resolve()),
                   "stderr": str((stderr or log).resolve()), "env": dict(os.environ if env is None else env)}
        with self._lock:
            while self._proc is not None and self._proc.poll() is not None:
                self._pump(1.0)  # what it said before it died
            if self._proc is None:
                self._proc = subprocess.Popen([sys.executable, "-u", "-m", __name__, *self._preload],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL)
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
            while not self._started:
                if self._proc is None:
                    raise OSError(f"the toolkit's fork server ended before starting {module}")
                self._pump(1.0)
            started = self._started.pop(0)
            if isinstance(started, str):
                raise OSError(f"the toolkit's fork server could not start {module}: {started}")
            self._running.add(started)
            return started

    def ended(self, pid: int) -> tuple[int, int] | None:
        """(wait status, peak resident bytes) once the child `pid` has ended, else None (once only)."""
        with self._lock:
            self._pump(0)
            return self._ended.pop(pid, None)

    def kill(self, pid: int) -> None:
        with self._lock:
            self._pump(0)
            if pid in self._running:
                os.kill(pid, signal.SIGKILL)

    def _pump(self, timeout: float) -> None:
        """Read what the server has said; if it has died, so have its children (PR_SET_PDEATHSIG)."""
        if self._proc is None:
            return
        out = self._proc.stdout.fileno()
        if not select.select([out], [], [], timeout)[0]:
            return
        data = os.read(out, 1 << 16)
        if not data:
            self._proc.wait()
            self._proc, self._pending = None, b""
            self._ended.update({pid: (_KILLED, 0) for pid in self._running})
            self._running.clear()
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            message = json.loads(line)
            if "ended" in message:
                self._running.discard(message["ended"])
                self._ended[message["ended"]] = (message["status"], message["peak_rss_bytes"])
            else:
                self._started.append(message.get("started", message.get("error")))

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.wait()


_SERVER: ForkServer | None = None


def server() -> ForkServer:
    global _SERVER
    if _SERVER is None:
        _SERVER = ForkServer()
        atexit.register(_SERVER.close)
    return _SERVER


def _write_to(fd: int, path: str) -> None:
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, fd)
    os.close(out)


def _run_job(request: dict, keep_closed: list[int], server_pid: int) -> None:
    """In the forked child: become `python -u -m module args` and exit with its status."""
    code = 1
    try:
        for fd in keep_closed:
            os.close(fd)
        die_with_parent(server_pid)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _write_to(1, request["stdout"])
        if request["stderr"] == request["stdout"]:
            os.dup2(1, 2)
        else:
            _write_to(2, request["stderr"])
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = request["cwd"]  # as `python -m` puts its working folder first
        sys.argv = [request["module"], *request["args"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(preload: list[str]) -> None:
    """The server: requests on stdin, one JSON line each; reports on stdout. Ends when stdin closes or its
    parent dies, whichever it sees first."""
    parent = os.getppid()
    requests, reports = os.dup(0), os.dup(1)
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 0)
    os.dup2(quiet, 1)
    os.close(quiet)
    # Ctrl-C reaches the whole process group: the jobs stop, the server stays to report how they ended.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import torch  # noqa: F401

    for module in preload:
        importlib.import_module(module)

    def say(message: dict) -> None:
        os.write(reports, json.dumps(message).encode() + b"\n")

    pending, server = b"", os.getpid()
    while os.getppid() == parent:  # rkconvert killed: the jobs end with the server (PR_SET_PDEATHSIG)
        if select.select([requests], [], [], 0.1)[0]:
            data = os.read(requests, 1 << 16)
            if not data:
                return
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                try:
                    pid = os.fork()
                except OSError as error:
                    say({"error": str(error)})
                    continue
                if pid == 0:
                    _run_job(json.loads(line), [requests, reports], server)
                say({"started": pid})
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            say({"ended": pid, "status": status, "peak_rss_bytes": usage.ru_maxrss * 1024})


if __name__ == "__main__":
    serve(sys.argv[1:])
