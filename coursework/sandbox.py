"""The sandbox a submission runs in: bubblewrap (Debian's ``bubblewrap``) plus resource limits.

The kernel (``coursework/_kernel.py``) runs as an unprivileged user of its own (no capabilities), in new
PID, IPC, UTS and network namespaces (no network: only a loopback of its own), on a root file system made
of read-only views of the system, the Python installation and the ``ddpm`` package, an empty private
working folder (``/work``, a size-limited tmpfs, holding a read-only copy of the book's data) and a private
``/tmp``. The grader's folder, the instructor edition, the book's sources, the other submissions and the
rest of the host are not in its file system at all. Limits: address space, CPU seconds, processes, open
files, file size; the grader adds a wall-clock limit per request and per notebook, and an output limit.

The kernel's stdout carries both the cells' output and its answers; the grader counts the first and reads
the second as untrusted data. If the sandbox cannot be made here, :func:`check` says why and the grader
refuses to grade.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "ddpm"
REPLY_MAX = 64 * 1024 * 1024  # bytes of one answer line


@dataclass
class Limits:
    memory_bytes: int = 6 * 1024**3  # address space; torch alone maps about 1.5 GiB
    cpu_seconds: int = 1200
    processes: int = 128  # threads count too
    open_files: int = 256
    file_bytes: int = 64 * 1024**2
    work_bytes: int = 256 * 1024**2  # the private working folder
    output_bytes: int = 100_000  # per cell; the rest is counted and dropped


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be made on this machine (the message says what is missing)."""


class KernelDied(RuntimeError):
    """The kernel stopped (killed at a limit, or it exited)."""


def _python_root() -> Path:
    return Path(sys.base_prefix).resolve()


def bwrap_command(uid: int, data: Path | None, limits: Limits) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed: install Debian's 'bubblewrap' (make system-deps); "
            "the grader does not run student code without a sandbox"
        )
    py = _python_root()
    cmd = [
        bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session",
        "--ro-bind", "/usr", "/usr",
    ]
    for d in ("bin", "lib", "lib64", "sbin"):
        p = Path("/") / d
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            cmd += ["--ro-bind", str(p), str(p)]
    for f in ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group"):
        if Path(f).exists():
            cmd += ["--ro-bind", f, f]
    if not str(py).startswith("/usr/"):
        parts = py.parts[1:-1]
        for k in range(1, len(parts) + 1):
            cmd += ["--perms", "0755", "--dir", "/" + "/".join(parts[:k])]
        cmd += ["--ro-bind", str(py), str(py)]
    cmd += [
        "--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/pkg", "--perms", "0755", "--dir", "/opt/cw",
        "--ro-bind", str(PACKAGE), "/opt/pkg/ddpm",
        "--ro-bind", str(HERE / "_kernel.py"), "/opt/cw/_kernel.py",
        "--ro-bind", str(HERE / "wire.py"), "/opt/cw/wire.py",
        "--proc", "/proc", "--dev", "/dev",
        "--perms", "1777", "--size", str(64 * 1024**2), "--tmpfs", "/tmp",
        "--perms", "0777", "--size", str(limits.work_bytes), "--tmpfs", "/work",
    ]
    if data is not None and data.is_dir():
        cmd += ["--ro-bind", str(data), "/work/data"]
    cmd += [
        "--chdir", "/work", "--clearenv",
        "--setenv", "PYTHONPATH", "/opt/pkg", "--setenv", "HOME", "/work", "--setenv", "MPLBACKEND", "Agg",
        "--setenv", "PYTHONHASHSEED", "0", "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "MKL_NUM_THREADS", "1",
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "MPLCONFIGDIR", "/tmp/mpl", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--",
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
        str(Path(sys.executable).resolve()),
    ]
    return cmd


def _limit(limits: Limits):
    def apply():
        for res, value in (
            (resource.RLIMIT_AS, limits.memory_bytes),
            (resource.RLIMIT_CPU, limits.cpu_seconds),
            (resource.RLIMIT_NPROC, limits.processes),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_FSIZE, limits.file_bytes),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(res, (value, value))

    return apply


_checked: dict = {}


def check(uid: int = 61000) -> None:
    """Raise :class:`SandboxUnavailable` unless a sandbox with its own network namespace starts here."""
    if "ok" in _checked:
        if _checked["ok"] is not True:
            raise SandboxUnavailable(_checked["ok"])
        return
    try:
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "the grader runs as root (it starts each kernel as an unprivileged user of its own); "
                "run it as root, for example in a container"
            )
        cmd = bwrap_command(uid, None, Limits())
        probe = "import socket,os;print(sorted(os.listdir('/sys/class/net')) if os.path.isdir('/sys/class/net') else 'nosys', os.getuid())"
        p = subprocess.run(cmd + ["-c", probe], capture_output=True, text=True, timeout=60, preexec_fn=_limit(Limits()))
        if p.returncode != 0:
            raise SandboxUnavailable(
                "bubblewrap cannot make the sandbox here (new namespaces refused: "
                f"{(p.stderr.strip().splitlines() or ['no message'])[-1][:200]}); the grader does not run student code without one"
            )
        if not p.stdout.strip().endswith(str(uid)):
            raise SandboxUnavailable(f"the sandbox did not run as the unprivileged user {uid}")
        _checked["ok"] = True
    except SandboxUnavailable as e:
        _checked["ok"] = str(e)
        raise


class Kernel:
    """One sandboxed kernel: run cells, read names, call functions."""

    def __init__(self, uid: int, data: Path | None, limits: Limits, callbacks=None):
        self.limits = limits
        self.callbacks = callbacks or {}
        self.proc = subprocess.Popen(
            bwrap_command(uid, data, limits) + ["/opt/cw/_kernel.py"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_limit(limits), bufsize=0,
        )
        self.buf = bytearray()
        self.dead: str | None = None
        os.set_blocking(self.proc.stdout.fileno(), False)

    def close(self) -> None:
        """Kill the sandbox (its PID namespace goes with it)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def _write(self, obj) -> None:
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise KernelDied("the kernel stopped") from None

    def _read(self, nonce: str, deadline: float) -> tuple[int, dict]:
        """(bytes of output before the answer, the answer)."""
        marker = b"\n\x1e" + nonce.encode() + b" "
        printed = 0
        fd = self.proc.stdout.fileno()
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                j = self.buf.find(b"\n", i + len(marker))
                if j >= 0:
                    line = bytes(self.buf[i + len(marker): j])
                    printed += i
                    del self.buf[: j + 1]
                    try:
                        reply = json.loads(line)
                    except ValueError:
                        reply = None
                    if not isinstance(reply, dict):
                        raise KernelDied("the kernel sent an answer that is not JSON")
                    return printed, reply
                if len(self.buf) - i > REPLY_MAX:
                    raise KernelDied(f"the kernel sent an answer over {REPLY_MAX // 2**20} MiB")
            else:
                keep = len(marker) - 1
                if len(self.buf) > keep:
                    printed += len(self.buf) - keep
                    del self.buf[: len(self.buf) - keep]
            left = deadline - time.monotonic()
            if left <= 0:
                self.dead = "timeout"
                raise KernelDied("timeout")
            r, _, _ = select.select([fd], [], [], min(left, 1.0))
            if r:
                try:
                    chunk = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    self.dead = "exit"
                    self.proc.wait(timeout=10)
                    raise KernelDied(f"the kernel stopped (exit status {self.proc.returncode})")
                self.buf += chunk

    def request(self, op: str, wait: float, **kw) -> tuple[int, dict]:
        """Send one request; wait at most ``wait`` seconds for its answer (else :class:`KernelDied`)."""
        nonce = secrets.token_hex(16)
        self._write({"op": op, "nonce": nonce, **kw})
        deadline = time.monotonic() + wait
        printed = 0
        while True:
            n, reply = self._read(nonce, deadline)
            printed += n
            if "callback" in reply:
                self._write(self._answer_callback(reply))
                continue
            return printed, reply

    def _answer_callback(self, reply: dict) -> dict:
        from . import wire

        f = self.callbacks.get(reply.get("callback"))
        if f is None:
            return {"error": "unknown callback"}
        try:
            args = wire.decode(reply.get("args"), None)
            kwargs = wire.decode(reply.get("kwargs"), None)
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise wire.WireError("bad arguments")
            return {"value": wire.encode(f(*args, **kwargs))}
        except Exception as e:
            return {"error": f"{type(e).__name__}: {str(e)[:200]}"}
