"""The compose setup run the way the README runs it, on the private engine, with devhub on the host.

One training run (the tiny model, the seed's schedule: 9 checkpoints + the final adapter) carries
every check. The trainer is paused (`docker compose pause`) around each step that must happen
"mid-run", so the order of events never depends on how fast this machine trains:

 1. `docker compose build`, then `docker compose up --build`, attached, as the README says;
 2. checkpoint-50 verified -> pause the trainer; wait for the uploader's health check to say
    healthy while it watches;
 3. `docker compose kill uploader` (SIGKILL): exit 137, not restarted (a kill is deliberate);
 4. the trainer completes two more checkpoints while no uploader runs;
    `docker compose run --rm uploader backfill` uploads them, exit 0;
 5. one more checkpoint, then `docker compose start uploader`: the restarted watcher uploads it;
 6. the uploader's process is killed -9 from the host (a crash): the restart policy restarts it;
 7. the trainer finishes; the uploader exits 0 by --exit-when-done and stays exited;
    `docker compose up` returns;
 8. `docker compose run --rm uploader status` / `backfill` as the README says;
 9. what reached devhub is checked file by file against the volume (`hubcheck`);
10. the images: the uploader's holds no torch; sizes; the canary token in no `docker inspect`,
    image history or image layer;
11. a configuration error (exit 2) is restarted at most 3 times, then stays exited.

`run()` returns a JSON-able report; tests/containers asserts on it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from scripts.containers import bases, hubcheck
from scripts.containers.engine import (
    CACHE_DIR,
    CommandFailed,
    Engine,
    EngineUnavailable,
    cache_lock,
    log,
    run,
    start_engine,
)

ROOT = bases.ROOT
HERE = bases.HERE
COMPOSE_FILES = (ROOT / "docker-compose.yml", HERE / "compose.override.yml")
USER = "ci"
APP_UID = APP_GID = 1000  # docker-compose.yml's default APP_UID/APP_GID
STEPS = list(range(50, 451, 50))
T = TypeVar("T")


class ScenarioError(RuntimeError):
    """A step of the scenario could not happen (the report holds what happened before)."""


def wait_for(what: str, condition: Callable[[], T | None], timeout: float,
             interval: float = 1.0, alive: Callable[[], str | None] | None = None) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        problem = alive() if alive is not None else None
        if problem:
            raise ScenarioError(f"while waiting for {what}: {problem}")
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Compose:
    """`docker compose` with this run's files and env file, the way a user's shell has them."""

    def __init__(self, engine: Engine, env_file: Path, token_file: Path) -> None:
        self.engine = engine
        self.env = engine.env | {
            "COMPOSE_FILE": os.pathsep.join(str(p) for p in COMPOSE_FILES),
            "COMPOSE_ENV_FILES": str(env_file),  # instead of a developer's .env
            "CKPT_CONTAINERS_TOKEN_FILE": str(token_file),
        }

    def __call__(self, *args: str, check: bool = True, timeout: float = 600,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run(["docker", "compose", "--ansi", "never", *args], check=check,
                   timeout=timeout, env=self.env | (env or {}), cwd=ROOT)

    def popen(self, *args: str, output: Path) -> subprocess.Popen[bytes]:
        with open(output, "ab") as out:
            return subprocess.Popen(["docker", "compose", "--ansi", "never", *args], cwd=ROOT,
                                    env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)

    def config(self) -> dict[str, Any]:
        return json.loads(self("config", "--format", "json").stdout)

    def container(self, service: str) -> str | None:
        ids = self("ps", "-aq", service, check=False).stdout.split()
        return ids[0] if ids else None


class Watcher(threading.Thread):
    """Samples the uploader container's state every second: status, health, exit, restarts."""

    def __init__(self, compose: Compose) -> None:
        super().__init__(daemon=True)
        self.compose = compose
        self.samples: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        cid = None
        while not self.stopped.is_set():
            info = inspect(self.compose.engine, cid) if cid else None
            if info is None:
                cid = self.compose.container("uploader")
            if info is not None:
                sample = state_of(info)
                if not self.samples or {k: v for k, v in self.samples[-1].items()
                                        if k != "t"} != sample:
                    self.samples.append(sample | {
                        "t": round(time.monotonic() - self.started_at, 1)})
            self.stopped.wait(1.0)

    def first(self, **match: Any) -> dict[str, Any] | None:
        return next((s for s in self.samples if all(s.get(k) == v for k, v in match.items())),
                    None)


def inspect(engine: Engine, ref: str) -> dict[str, Any] | None:
    result = engine.docker("inspect", ref, check=False)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)[0]


def state_of(info: dict[str, Any]) -> dict[str, Any]:
    state = info["State"]
    return {"status": state["Status"], "exit_code": state["ExitCode"],
            "health": (state.get("Health") or {}).get("Status"),
            "restarts": info["RestartCount"], "started_at": state["StartedAt"]}


def children(pid: int) -> list[int]:
    """Host pids whose parent is `pid` (the container's init: docker-init, as `init: true`)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def wiring(info: dict[str, Any]) -> dict[str, Any]:
    """What compose made of the service: user, mounts, the token's variable, restart policy."""
    config, host = info.get("Config", {}), info.get("HostConfig", {})
    env = dict(e.partition("=")[::2] for e in config.get("Env") or [])
    return {"user": config.get("User"), "hf_token_file": env.get("HF_TOKEN_FILE"),
            "hf_endpoint": env.get("HF_ENDPOINT"), "network": host.get("NetworkMode"),
            "init": host.get("Init"), "restart": host.get("RestartPolicy"),
            "mounts": sorted((m.get("Type"), m.get("Name") or "", m.get("Destination"),
                              m.get("RW")) for m in info.get("Mounts", []))}


def _rows(stdout: str) -> list[dict[str, Any]]:
    start = stdout.find("[")
    return json.loads(stdout[start:]) if start >= 0 else []


def verified_steps(rows: list[dict[str, Any]]) -> set[int]:
    return {r["step"] for r in rows if r["kind"] == "checkpoint" and r["state"] == "verified"}


class Scenario:
    def __init__(self, engine: Engine, run_dir: Path) -> None:
        self.engine = engine
        self.run_dir = run_dir
        self.report: dict[str, Any] = {"run_dir": str(run_dir), "timings": {}}
        self.canary = f"hf_ckptcanary{secrets.token_hex(12)}"
        self.context_canary = f"ckpt-context-canary-{secrets.token_hex(12)}"
        self.token_file = run_dir / "hf_token"
        self.env_file = run_dir / "compose.env"
        self.hub: Any = None
        self.compose: Compose | None = None
        self.up: subprocess.Popen[bytes] | None = None
        self.watcher: Watcher | None = None
        self._t0 = time.monotonic()

    # ---- helpers -----------------------------------------------------------------------------

    def timing(self, name: str, since: float) -> None:
        self.report["timings"][name] = round(time.monotonic() - since, 1)

    @property
    def c(self) -> Compose:
        assert self.compose is not None
        return self.compose

    def volume(self) -> Path:
        name = f"{self.project}_checkpoints"
        out = self.engine.docker("volume", "inspect", "--format", "{{.Mountpoint}}", name)
        return Path(out.stdout.strip())

    def markers(self) -> set[int]:
        folder = self.volume() / ".complete"
        steps = set()
        for path in folder.glob("checkpoint-*.json") if folder.is_dir() else []:
            suffix = path.stem.removeprefix("checkpoint-")
            if suffix.isdigit():
                steps.add(int(suffix))
        return steps

    def exec_rows(self) -> list[dict[str, Any]] | None:
        result = self.c("exec", "-T", "uploader", "ckpt-uploader", "status", "--json",
                        check=False, timeout=60)
        return _rows(result.stdout) if result.returncode == 0 else None

    def run_rows(self) -> list[dict[str, Any]]:
        return _rows(self.c("run", "--rm", "-T", "uploader", "status", "--json").stdout)

    def uploader_state(self) -> dict[str, Any]:
        cid = self.c.container("uploader")
        info = inspect(self.engine, cid) if cid else None
        if info is None:
            raise ScenarioError("the uploader container is gone")
        return state_of(info)

    def service_state(self, service: str) -> dict[str, Any] | None:
        cid = self.c.container(service)
        info = inspect(self.engine, cid) if cid else None
        return state_of(info) if info else None

    def up_alive(self) -> str | None:
        if self.up is not None and self.up.poll() is not None:
            return f"`docker compose up` exited {self.up.returncode}; see {self.run_dir}/up.log"
        return None

    def pause(self) -> None:
        """`docker compose pause trainer`, retried: the cgroup freezer can fail to freeze a
        process that is in the middle of disk I/O (runc: "unable to freeze")."""
        for attempt in range(20):
            result = self.c("pause", "trainer", check=False)
            if result.returncode == 0:
                return
            state = self.service_state("trainer")
            if state is not None and state["status"] == "paused":
                return
            if state is None or state["status"] != "running":
                break
            time.sleep(0.5 + attempt * 0.1)
        raise ScenarioError(f"cannot pause the trainer: {(result.stdout + result.stderr)[-500:]}")

    def unpause(self) -> None:
        self.c("unpause", "trainer")

    # ---- the steps ---------------------------------------------------------------------------

    def prepare(self) -> None:
        from devhub.testing import DevHub

        self.token_file.write_text(self.canary)
        os.chown(self.token_file, APP_UID, APP_GID)
        self.token_file.chmod(0o600)
        self.hub = DevHub(self.run_dir / "hub", users={USER: self.canary}).start()
        env_lines = [f"HF_ENDPOINT={self.hub.url}", "TRAINER_BASE_MODEL=tiny"]
        transfer = os.environ.get("CKPT_CONTAINERS_UPLOADER_TRANSFER")
        if transfer:
            env_lines.append(f"UPLOADER_TRANSFER={transfer}")
        self.env_file.write_text("".join(f"{line}\n" for line in env_lines))
        self.report["env_file"] = env_lines
        log(f"devhub on {self.hub.url}; compose env file: {', '.join(env_lines)}")
        self.compose = Compose(self.engine, self.env_file, self.token_file)
        config = self.c.config()
        self.project = config["name"]
        self.report["project"] = self.project
        self.images = {s: f"{self.project}-{s}" for s in ("trainer", "uploader")}
        self.c("down", "--volumes", "--remove-orphans", "--timeout", "5")

    def standins(self) -> None:
        t = time.monotonic()
        self.report["bases"] = bases.build_standins(self.engine, CACHE_DIR, self.run_dir)
        self.timing("stand-in bases", t)

    def build(self) -> None:
        # A stray secret in the build context: .dockerignore must keep it out of every layer.
        planted = ROOT / "secrets" / f".ckpt-containers-{secrets.token_hex(4)}"
        planted.write_text(self.context_canary)
        t = time.monotonic()
        try:
            result = self.c("--progress", "plain", "build", timeout=1500, check=False)
        finally:
            planted.unlink(missing_ok=True)
        (self.run_dir / "build.log").write_text(result.stdout + result.stderr)
        self.timing("docker compose build", t)
        if result.returncode != 0:
            raise ScenarioError(f"docker compose build exited {result.returncode}:\n"
                                f"{(result.stdout + result.stderr)[-4000:]}")
        log(f"both images built in {self.report['timings']['docker compose build']:.0f}s")

    def image_facts(self) -> None:
        probe = ("import importlib.util as u, importlib.metadata as m, json, sys; "
                 "print(json.dumps({'python': sys.version.split()[0], "
                 "'torch': u.find_spec('torch') is not None, "
                 "'dists': sorted({d.metadata['Name'].lower() for d in m.distributions()})}))")
        facts: dict[str, Any] = {}
        for service, image in self.images.items():
            size = int(self.engine.docker("image", "inspect", "--format", "{{.Size}}",
                                          image).stdout)
            out = self.engine.docker("run", "--rm", "--network", "none", "--entrypoint",
                                     "python", image, "-c", probe).stdout
            facts[service] = {"image": image, "size": size, **json.loads(out)}
        for service, base in self.report["bases"].items():
            facts[service]["base"] = base
            facts[service]["base_size"] = int(self.engine.docker(
                "image", "inspect", "--format", "{{.Size}}", base).stdout)
        torch = self.engine.docker("run", "--rm", "--network", "none", "--entrypoint", "python",
                                   self.images["trainer"], "-c",
                                   "import torch; print(torch.__version__, "
                                   "torch.cuda.is_available())").stdout.split()
        facts["trainer"]["torch_version"], facts["trainer"]["cuda"] = torch[0], torch[1]
        self.report["images"] = facts
        for f in facts.values():
            log(f"{f['image']}: {f['size'] / 1e6:.0f} MB (base {f['base']}: "
                f"{f['base_size'] / 1e6:.0f} MB), torch installed: {f['torch']}")

    def start_up(self) -> None:
        self.watcher = Watcher(self.c)
        self.watcher.start()
        self._up_started = time.monotonic()
        self.up = self.c.popen("--progress", "plain", "up", "--build",
                               output=self.run_dir / "up.log")
        log("docker compose up --build (attached; log in up.log)")

    def first_checkpoint(self) -> None:
        rows = wait_for("checkpoint-50 to be verified",
                        lambda: (r := self.exec_rows()) and 50 in verified_steps(r) and r,
                        timeout=900, interval=2, alive=self.up_alive)
        self.pause()
        self.timing("up to checkpoint-50 verified", self._up_started)
        self.report["before_kill"] = rows
        log(f"checkpoint-50 verified; trainer paused at {sorted(self.markers())}")

    def healthy(self) -> None:
        assert self.watcher is not None
        sample = wait_for("the uploader's health check to say healthy",
                          lambda: self.watcher.first(health="healthy"),
                          timeout=240, alive=self.up_alive)
        self.report["health"] = {"healthy_after_s": sample["t"],
                                 "samples": list(self.watcher.samples)}
        log(f"uploader healthy {sample['t']:.0f}s after `up` started")

    def kill_and_backfill(self) -> None:
        self.c("kill", "uploader")
        killed = wait_for("the killed uploader to be exited",
                          lambda: (s := self.uploader_state())["status"] == "exited" and s,
                          timeout=60)
        time.sleep(5)
        after = self.uploader_state()
        log(f"docker compose kill uploader: exit {killed['exit_code']}, "
            f"5 s later {after['status']} (restarts {after['restarts']})")
        seen = self.markers()
        self.unpause()
        wanted = {s for s in STEPS if s > max(seen)}
        wanted = set(sorted(wanted)[:2])
        wait_for(f"checkpoints {sorted(wanted)} to complete while no uploader runs",
                 lambda: wanted <= self.markers(), timeout=600, alive=self.up_alive)
        self.pause()
        down_while = sorted(self.markers() - verified_steps(self.report["before_kill"]))
        t = time.monotonic()
        backfill = self.c("run", "--rm", "-T", "uploader", "backfill", check=False, timeout=600)
        (self.run_dir / "backfill-mid-run.log").write_text(backfill.stdout + backfill.stderr)
        self.timing("backfill (mid-run)", t)
        rows = self.run_rows()
        self.report["kill"] = {
            "exit_code": killed["exit_code"], "status_5s_later": after["status"],
            "restarts_5s_later": after["restarts"], "completed_while_down": down_while,
            "backfill_exit": backfill.returncode, "verified_after_backfill":
                sorted(verified_steps(rows)),
        }
        log(f"backfill while the uploader was down: exit {backfill.returncode}, verified "
            f"{sorted(verified_steps(rows))}")

    def restart(self) -> None:
        seen = self.markers()
        self.unpause()
        nxt = min(s for s in STEPS if s > max(seen))
        wait_for(f"checkpoint-{nxt} to complete", lambda: nxt in self.markers(), timeout=600,
                 alive=self.up_alive)
        self.pause()
        self.c("start", "uploader")
        rows = wait_for(f"the restarted uploader to verify checkpoint-{nxt}",
                        lambda: (r := self.exec_rows()) and nxt in verified_steps(r) and r,
                        timeout=300, interval=2)
        self.report["restart"] = {"step": nxt, "verified": sorted(verified_steps(rows)),
                                  "state": self.uploader_state()}
        log(f"docker compose start uploader: checkpoint-{nxt} verified after the restart")

    def crash(self) -> None:
        before = self.uploader_state()
        cid = self.c.container("uploader")
        assert cid is not None
        init_pid = int(self.engine.docker("inspect", "--format", "{{.State.Pid}}", cid).stdout)
        uploader_pids = [pid for pid in children(init_pid) if b"ckpt-uploader" in cmdline(pid)]
        if not uploader_pids:
            raise ScenarioError(f"no ckpt-uploader process under the container's init {init_pid}")
        for pid in uploader_pids:
            os.kill(pid, signal.SIGKILL)
        state = wait_for("the restart policy to restart the crashed uploader",
                         lambda: (s := self.uploader_state())["restarts"] > before["restarts"]
                         and s["status"] == "running" and s, timeout=120, interval=0.5)
        self.report["crash"] = {"killed_pids": uploader_pids, "restarts_before":
                                before["restarts"], "restarts_after": state["restarts"]}
        log(f"uploader process killed -9 (a crash): restarted by the policy "
            f"(restarts {before['restarts']} -> {state['restarts']})")

    def finish(self) -> None:
        self.unpause()
        assert self.up is not None
        t = time.monotonic()
        try:
            self.up.wait(1500)
        except subprocess.TimeoutExpired:
            raise ScenarioError("`docker compose up` did not return within 1500 s") from None
        self.timing("rest of the run after the crash", t)
        self.timing("docker compose up (whole)", self._up_started)
        at_end = self.uploader_state()
        time.sleep(10)
        later = self.uploader_state()
        trainer = self.service_state("trainer")
        cid = self.c.container("uploader")
        info = inspect(self.engine, cid) if cid else {}
        assert self.watcher is not None
        self.report["timeline"] = list(self.watcher.samples)
        self.report["health_log"] = ((info or {}).get("State", {}).get("Health") or {}).get("Log")
        self.report["wiring"] = {s: wiring(inspect(self.engine, c) or {}) for s in
                                 ("trainer", "uploader") if (c := self.c.container(s))}
        self.report["volume_owners"] = [list(o) for o in sorted(
            {(p.lstat().st_uid, p.lstat().st_gid) for p in self.volume().rglob("*")})]
        self.report["up"] = {
            "exit_code": self.up.returncode, "trainer": trainer, "uploader": at_end,
            "uploader_10s_later": later, "uploader_command": (info or {}).get("Config", {})
            .get("Cmd"), "restart_policy": (info or {}).get("HostConfig", {})
            .get("RestartPolicy"),
        }
        log(f"docker compose up returned {self.up.returncode}: trainer exit "
            f"{trainer and trainer['exit_code']}, uploader exit {at_end['exit_code']} "
            f"(10 s later: {later['status']}, restarts {later['restarts']})")

    def readme_commands(self) -> None:
        table = self.c("run", "--rm", "-T", "uploader", "status", check=False)
        rows = self.run_rows()
        backfill = self.c("run", "--rm", "-T", "uploader", "backfill", check=False)
        self.report["status"] = {"exit_code": table.returncode, "table": table.stdout,
                                 "rows": rows}
        self.report["backfill_after"] = {"exit_code": backfill.returncode,
                                         "output": (backfill.stdout + backfill.stderr)[-3000:]}
        log("docker compose run --rm uploader status:\n" + table.stdout.rstrip())
        log(f"docker compose run --rm uploader backfill: exit {backfill.returncode}")

    def check_hub(self) -> None:
        rows = self.report["status"]["rows"]
        self.report["hub"] = hubcheck.hub_report(self.hub.url, self.canary, USER, rows,
                                                 self.volume())
        problems = self.report["hub"]["problems"]
        log(f"devhub: {len(self.report['hub']['repos'])} repos checked file by file against "
            f"the volume, {len(problems)} problems" + "".join(f"\n  {p}" for p in problems))

    def check_secrets(self) -> None:
        hits: list[str] = []
        canaries = {"token": self.canary.encode(), "context": self.context_canary.encode()}
        containers = self.engine.docker("ps", "-aq").stdout.split()
        refs = [*containers, *self.images.values(), *self.report["bases"].values()]
        for ref in refs:
            out = self.engine.docker("inspect", ref).stdout.encode()
            hits += [f"docker inspect {ref}: {n}" for n, c in canaries.items() if c in out]
        for image in self.images.values():
            out = self.engine.docker("history", "--no-trunc", "--format", "{{json .}}",
                                     image).stdout.encode()
            hits += [f"docker history {image}: {n}" for n, c in canaries.items() if c in out]
            hits += [f"docker save {image}: {n}" for n in self._save_contains(image, canaries)]
        for name in ("up.log", "build.log", "backfill-mid-run.log"):
            path = self.run_dir / name
            data = path.read_bytes() if path.exists() else b""
            hits += [f"{name}: {n}" for n, c in canaries.items() if c in data]
        logs = self.c("logs", "--no-color", check=False).stdout.encode()
        hits += [f"docker compose logs: {n}" for n, c in canaries.items() if c in logs]
        self.report["secrets"] = {"hits": hits, "checked": refs}
        log(f"canary token searched in docker inspect ({len(refs)} objects), image history and "
            f"every layer of both images: {hits or 'found nowhere'}")

    def _save_contains(self, image: str, canaries: dict[str, bytes]) -> list[str]:
        found: set[str] = set()
        keep = max(len(c) for c in canaries.values())
        proc = subprocess.Popen(["docker", "save", image], env=self.engine.env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        tail = b""
        for block in iter(lambda: proc.stdout.read(1 << 20), b""):
            window = tail + block
            found |= {n for n, c in canaries.items() if c in window}
            tail = window[-keep:]
        if proc.wait() != 0:
            raise ScenarioError(f"docker save {image} failed")
        return sorted(found)

    def config_error(self) -> None:
        t = time.monotonic()
        self.c("up", "-d", "--no-build", "uploader", env={"UPLOADER_CONCURRENCY": "0"})

        def settled() -> dict[str, Any] | None:
            s = self.uploader_state()
            return s if s["status"] == "exited" and s["restarts"] >= 3 else None

        state = wait_for("a configuration error to exhaust on-failure:3", settled, timeout=180)
        time.sleep(5)
        later = self.uploader_state()
        logs = self.c("logs", "--no-color", "uploader", check=False)
        self.report["config_error"] = {"state": state, "5s_later": later,
                                       "log_tail": (logs.stdout + logs.stderr)[-1500:]}
        self.timing("configuration error restarts", t)
        log(f"UPLOADER_CONCURRENCY=0: exit {state['exit_code']}, restarted {state['restarts']} "
            f"times, 5 s later {later['status']} (restarts {later['restarts']})")

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stopped.set()
        if self.compose is not None:
            if self.up is not None and self.up.poll() is None:
                self.c("unpause", "trainer", check=False)
            self.c("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False,
                   timeout=300)
        if self.up is not None and self.up.poll() is None:
            self.up.terminate()
            try:
                self.up.wait(30)
            except subprocess.TimeoutExpired:
                self.up.kill()
        if self.hub is not None:
            self.hub.stop()

    def run(self) -> dict[str, Any]:
        steps = [self.prepare, self.standins, self.build, self.image_facts, self.start_up,
                 self.first_checkpoint, self.healthy, self.kill_and_backfill, self.restart,
                 self.crash, self.finish, self.readme_commands, self.check_hub,
                 self.check_secrets, self.config_error]
        self.report["steps_done"] = []
        try:
            for step in steps:
                step()
                self.report["steps_done"].append(step.__name__)
        except (ScenarioError, CommandFailed, subprocess.TimeoutExpired) as err:
            self.report["error"] = f"{step.__name__}: {err}"
            log(f"FAILED in {step.__name__}: {err}")
        except Exception as err:  # a bug here: still close everything and report it
            self.report["error"] = f"{step.__name__}: {traceback.format_exc()}"
            log(f"FAILED in {step.__name__}: {err!r}")
        finally:
            self.close()
            self.timing("total", self._t0)
        return self.report


def run_all(cache: Path = CACHE_DIR, keep: bool = False) -> dict[str, Any]:
    """Engine, bases, images and the scenario; EngineUnavailable when no engine can start."""
    if os.geteuid() != 0:
        raise EngineUnavailable("not root: dockerd and debootstrap need root here")
    with cache_lock(cache):
        run_dir = Path(tempfile.mkdtemp(prefix="ckpt-containers-", dir="/tmp"))
        log(f"run dir {run_dir} (logs, report.json), cache {cache}")
        engine = start_engine(run_dir, cache)
        try:
            report = Scenario(engine, run_dir).run()
            report["engine"] = {"driver": engine.driver, "server": engine.server_version(),
                                "compose": engine.compose_version()}
            engine.docker("image", "prune", "-f", check=False)
        finally:
            engine.stop()
        (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
        last = cache / "last-run"
        if last.exists():
            shutil.rmtree(last)
        shutil.copytree(run_dir, last, ignore=shutil.ignore_patterns("x-*", "hub", "home"),
                        symlinks=True)
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        log(f"report: {last / 'report.json'}")
        return report
