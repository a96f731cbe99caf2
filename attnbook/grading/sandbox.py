"""Where a learner's code runs during trusted grading: a sandbox made with existing tools.

Backends, best first (``ATTNBOOK_SANDBOX=bwrap|unshare|none`` forces one):

* ``bwrap`` (bubblewrap, the Debian package ``bubblewrap``): new user, PID, network, IPC, UTS and mount
  namespaces; no network at all (not even the grader's loopback); a read-only view of only what Python
  needs (the interpreter, the virtual environment, the ``attnbook`` package with ``grading/tasks``
  hidden); a private working folder, ``/tmp`` and ``/dev/shm``, all in memory and size-capped (nothing
  is written to the grader's disk; the rest of ``/dev`` is read-only); no capabilities; killed with the
  grader (``--die-with-parent``) and, being the PID namespace's init, taking every process of the
  submission with it.
* ``unshare`` (util-linux): new user, PID and network namespaces, killed with its child; the file system
  stays as it is (writable where the grader's user may write). A warning says so.
* ``none``: only the limits below and killing the process group. A warning says so.

Every backend applies resource limits in the kernel process before any learner code runs: address space
(``RLIMIT_AS``), CPU time (``RLIMIT_CPU``, hard: the learner cannot raise it), file size and core
dumps; in a user namespace (bwrap, unshare) also the number of processes and threads (``RLIMIT_NPROC``,
counted per user namespace since Linux 5.14, and not enforced at all when the grader runs as root). The wall-clock limit of a cell is the grader's: it kills the whole sandbox.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from . import wire

PACKAGE_DIR = Path(__file__).resolve().parents[1]
TASKS_DIR = PACKAGE_DIR / "grading" / "tasks"
#: the private working folder, as the learner's code sees it
WORKDIR = "/home/learner"


@dataclass
class Limits:
    """Per-submission limits. ``memory_mb`` bounds the address space (a torch import needs about 600 MB
    of it); ``cpu_s`` is the hard CPU-time limit of the kernel process for the whole submission;
    ``nproc`` bounds processes and threads (a fork bomb); ``notebook_timeout`` is the wall-clock budget of
    one submission, restarts and checks included (many cells, each just under ``cell_timeout``)."""

    cell_timeout: float = 60.0
    memory_mb: int = 3072
    cpu_s: int = 900
    file_mb: int = 64
    tmp_mb: int = 128
    work_mb: int = 128
    shm_mb: int = 64
    nproc: int = 256
    start_timeout: float = 120.0
    notebook_timeout: float = 300.0


class SandboxUnavailable(RuntimeError):
    pass


_BOOTSTRAP = """\
import os, resource, sys, time
os.environ['ATTNBOOK_T_START'] = repr(time.time())
L = resource
limits = [(L.RLIMIT_AS, {mem}), (L.RLIMIT_CPU, {cpu}), (L.RLIMIT_FSIZE, {fsize}), (L.RLIMIT_CORE, 0)]
if {nproc} > 0:
    limits.append((L.RLIMIT_NPROC, {nproc}))
for which, value in limits:
    try:
        L.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass
sys.argv = ['kernel_side', '{read_fd}', '{write_fd}']
import runpy
runpy.run_module('attnbook.grading.kernel_side', run_name='__main__')
"""


def _python_paths() -> list[str]:
    """Folders the interpreter needs, read-only inside the sandbox: the virtual environment and the
    Python installation it comes from, nothing else (not the grader's own ``sys.path``, which may hold
    the repository's tests or tools)."""
    paths = {
        os.path.realpath(sys.prefix),
        os.path.realpath(sys.base_prefix),
        os.path.realpath(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))),
    }
    system = ("/", "/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc")
    return sorted(p for p in paths if p not in system and not p.startswith("/usr/"))


def _bwrap_command(limits: Limits) -> list[str]:
    bwrap = shutil.which("bwrap")
    cmd = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--disable-userns",
        "--clearenv",
    ]
    for top in ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/libx32", "/sbin"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    for item in (
        "ld.so.cache",
        "ld.so.conf",
        "ld.so.conf.d",
        "localtime",
        "nsswitch.conf",
        "fonts",
        "matplotlibrc",
    ):
        if os.path.exists(f"/etc/{item}"):
            cmd += ["--ro-bind", f"/etc/{item}", f"/etc/{item}"]
    # The private /tmp comes before the interpreter, the virtual environment and the package are bound:
    # they may themselves live under /tmp (a checkout in /tmp), and a tmpfs mounted after them would hide them.
    cmd += ["--size", str(limits.tmp_mb * 2**20), "--tmpfs", "/tmp"]
    for path in _python_paths():
        cmd += ["--ro-bind", path, path]
    cmd += ["--ro-bind", str(PACKAGE_DIR), str(PACKAGE_DIR)]
    if TASKS_DIR.is_dir():  # the references: not there for the learner's code
        cmd += ["--tmpfs", str(TASKS_DIR), "--remount-ro", str(TASKS_DIR)]
    # bwrap's /dev is a writable tmpfs without a size limit: only a capped /dev/shm stays writable
    cmd += [
        "--dev",
        "/dev",
        "--size",
        str(limits.shm_mb * 2**20),
        "--tmpfs",
        "/dev/shm",
        "--remount-ro",
        "/dev",
        "--proc",
        "/proc",
        "--size",
        str(limits.work_mb * 2**20),
        "--tmpfs",
        WORKDIR,
        "--remount-ro",
        "/",
        "--chdir",
        WORKDIR,
    ]
    env = {
        "HOME": WORKDIR,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "IPYTHONDIR": "/tmp/ipython",
        "MPLCONFIGDIR": "/tmp/mpl",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    return cmd + ["--"]


def _unshare_command() -> list[str]:
    return [
        shutil.which("unshare"),
        "--user",
        "--map-root-user",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
    ]


@cache
def backend() -> str:
    """The best sandbox that works here (probed once): 'bwrap', 'unshare' or 'none'."""
    forced = os.environ.get("ATTNBOOK_SANDBOX")
    if forced in ("bwrap", "unshare", "none"):
        return forced
    if shutil.which("bwrap"):
        probe = _bwrap_command(Limits()) + [sys.executable, "-c", "import attnbook"]
        if (
            subprocess.run(
                probe,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            ).returncode
            == 0
        ):
            return "bwrap"
    if shutil.which("unshare"):
        probe = _unshare_command() + ["true"]
        if (
            subprocess.run(
                probe,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            ).returncode
            == 0
        ):
            return "unshare"
    return "none"


WARNINGS = {
    "unshare": "bubblewrap (bwrap) is not available: learners' code runs without network and in its own "
    "process namespace, but it can read and write files like the grader's user. Install the "
    "package `bubblewrap`, or grade inside a container (see the instructor notes).",
    "none": "no sandbox is available (neither bubblewrap nor unshare works here): learners' code runs as "
    "the grader's user with only time and memory limits. Grades are still computed outside the "
    "learner's process, but grade untrusted work only in a container (see the instructor notes).",
}


def warn_if_weak() -> None:
    kind = backend()
    if kind in WARNINGS:
        warnings.warn(WARNINGS[kind], RuntimeWarning, stacklevel=2)


class Sandbox:
    """One kernel for one submission: started at once (the import of torch overlaps other work),
    used through :attr:`peer`, then destroyed with every process it started."""

    def __init__(self, limits: Limits, handlers: dict | None = None):
        self.limits = limits
        self.kind = backend()
        self.workdir = tempfile.mkdtemp(prefix="attnbook-work-")
        self.started = time.time()
        self.ready_info: dict | None = None
        to_kernel_r, to_kernel_w = os.pipe()
        from_kernel_r, from_kernel_w = os.pipe()
        mem = limits.memory_mb * 2**20
        # RLIMIT_NPROC counts per user namespace only inside one; outside (no sandbox) it would count
        # every process of the grader's user
        nproc = limits.nproc if self.kind in ("bwrap", "unshare") else 0
        bootstrap = _BOOTSTRAP.format(
            mem=mem,
            cpu=int(limits.cpu_s),
            fsize=limits.file_mb * 2**20,
            nproc=nproc,
            read_fd=to_kernel_r,
            write_fd=from_kernel_w,
        )
        python = [sys.executable, "-c", bootstrap]
        if self.kind == "bwrap":
            cmd = _bwrap_command(limits) + python
        elif self.kind == "unshare":
            cmd = _unshare_command() + python
        else:
            cmd = python
        env = None
        if self.kind != "bwrap":
            env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNBOOK_")}
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", HOME=self.workdir)

        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
            env=env,
            pass_fds=(to_kernel_r, from_kernel_w),
            start_new_session=True,
        )
        os.close(to_kernel_r)
        os.close(from_kernel_w)
        self.peer = wire.Peer(from_kernel_r, to_kernel_w, handlers=handlers)
        self.alive = True

    def wait_ready(self) -> dict:
        """Block until the kernel has imported torch; its own timings ('t_start', 't_torch', 't_ready')."""
        if self.ready_info is None:
            message, _ = self.peer.receive(time.monotonic() + self.limits.start_timeout)
            if message.get("re") != "ready":
                raise wire.WireError("the kernel did not start")
            self.ready_info = message
        return self.ready_info

    def set_handlers(self, handlers: dict) -> None:
        self.peer.handlers = handlers

    def stop(self) -> None:
        """Kill every process of the sandbox and nothing else: safe from another thread (a watchdog) while
        the grader is blocked writing to the kernel; the write then fails and :meth:`kill` cleans up."""
        if not self.alive:  # reaped already: its process group id may belong to someone else now
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        """Destroy the sandbox and everything in it (idempotent)."""
        if self.alive:
            self.alive = False
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.process.kill()
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for fd in (self.peer.read_fd, self.peer.write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __del__(self):
        try:
            self.kill()
        except Exception:
            pass


class Pool:
    """Sandboxes started ahead of need: each serves one submission (or one restart) and is destroyed."""

    def __init__(self, limits: Limits, spare: int = 1):
        self.limits, self.spare = limits, spare
        self.ready: list[Sandbox] = []

    def take(self, prefetch: bool = True) -> Sandbox:
        box = self.ready.pop(0) if self.ready else Sandbox(self.limits)
        while prefetch and len(self.ready) < self.spare:
            self.ready.append(Sandbox(self.limits))
        return box

    def close(self) -> None:
        for box in self.ready:
            box.kill()
        self.ready = []
