"""The checks on a scenario report (one function per claim, None when it holds) and its summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scripts.containers.scenario import STEPS, verified_steps

Check = Callable[[dict[str, Any]], str | None]


def _need(report: dict[str, Any], *keys: str) -> str | None:
    missing = [k for k in keys if k not in report]
    if missing:
        return (f"the scenario never got to {', '.join(missing)}: "
                f"{report.get('error', 'no error recorded')}")
    return None


def every_checkpoint_verified_on_devhub(report: dict[str, Any]) -> str | None:
    if problem := _need(report, "status", "hub"):
        return problem
    rows = report["status"]["rows"]
    steps = sorted(verified_steps(rows))
    finals = [r for r in rows if r["kind"] == "final" and r["state"] == "verified"]
    if steps != STEPS or len(finals) != 1:
        return f"verified checkpoints {steps}, verified finals {len(finals)}; rows: {rows}"
    if len(report["hub"]["repos"]) != len(STEPS) + 1:
        return f"devhub holds {report['hub']['repos']}"
    if report["hub"]["problems"]:
        return "\n".join(report["hub"]["problems"])
    return None


def uploader_exits_0_when_done_and_stays_exited(report: dict[str, Any]) -> str | None:
    if problem := _need(report, "up", "crash"):
        return problem
    up = report["up"]
    if up["uploader_command"] != ["watch", "--exit-when-done"]:
        return f"the uploader ran {up['uploader_command']}"
    end, later = up["uploader"], up["uploader_10s_later"]
    if end["status"] != "exited" or end["exit_code"] != 0:
        return f"the uploader ended {end}"
    if later != end:
        return f"the uploader changed after its exit 0: {end} -> {later}"
    if up["trainer"] is None or up["trainer"]["exit_code"] != 0:
        return f"the trainer ended {up['trainer']}"
    if up["exit_code"] != 0:
        return f"`docker compose up` exited {up['exit_code']}"
    return None


def healthcheck_turns_healthy_while_watching(report: dict[str, Any]) -> str | None:
    if problem := _need(report, "health"):
        return problem
    samples = report["health"]["samples"]
    healthy = [s for s in samples if s["health"] == "healthy"]
    if not healthy or healthy[0]["status"] != "running":
        return f"health samples: {samples}"
    return None


def kill_then_restart_loses_nothing(report: dict[str, Any]) -> str | None:
    if problem := _need(report, "kill", "restart", "crash", "status"):
        return problem
    kill, restart, crash = report["kill"], report["restart"], report["crash"]
    if kill["exit_code"] != 137 or kill["status_5s_later"] != "exited":
        return f"docker compose kill: {kill}"
    if not kill["completed_while_down"]:
        return "no checkpoint completed while the uploader was down"
    if kill["backfill_exit"] != 0:
        return f"backfill while the uploader was down exited {kill['backfill_exit']}"
    if not set(kill["completed_while_down"]) <= set(kill["verified_after_backfill"]):
        return (f"backfill left {kill['completed_while_down']} not all verified: "
                f"{kill['verified_after_backfill']}")
    if restart["step"] not in restart["verified"]:
        return f"after `docker compose start uploader`: {restart}"
    if crash["restarts_after"] != crash["restarts_before"] + 1:
        return f"the crashed uploader was not restarted by the policy: {crash}"
    before = {(r["kind"], r["step"]): r for r in report["before_kill"]
              if r["state"] == "verified"}
    after = {(r["kind"], r["step"]): r for r in report["status"]["rows"]}
    changed = [k for k, r in before.items()
               if (after[k]["repo_id"], after[k]["commit_sha"]) != (r["repo_id"], r["commit_sha"])]
    if changed:
        return f"verified before the kill, uploaded again after it: {changed}"
    return None


def uploader_image_has_no_torch(report: dict[str, Any]) -> str | None:
    if problem := _need(report, "images"):
        return problem
    image = report["images"]["uploader"]
    heavy = [d for d in image["dists"] if d == "torch" or d.startswith(("nvidia-", "triton"))]
    if image["torch"] or heavy:
        return f"the uploader image holds {heavy or 'torch'}"
    if not report["images"]["trainer"]["torch"]:
        return "the trainer image has no torch"
    return None


def readme_run_commands_work(report: dict[str, Any]) -> str | None:
    if problem := _need(report, "status", "backfill_after"):
        return problem
    status, backfill = report["status"], report["backfill_after"]
    lines = [line.lstrip("* ").split() for line in status["table"].splitlines()]
    shown = {(int(w[0]), w[1], w[2]) for w in lines
             if len(w) > 2 and w[0].isdigit() and w[1] in ("checkpoint", "final")}
    rows = {(r["step"], r["kind"], r["state"]) for r in status["rows"]}
    if status["exit_code"] != 0 or shown != rows:
        return (f"docker compose run --rm uploader status exited {status['exit_code']}, "
                f"showed {sorted(shown)} for {sorted(rows)}:\n{status['table']}")
    if backfill["exit_code"] != 0:
        return f"docker compose run --rm uploader backfill exited {backfill['exit_code']}:\n" + \
            backfill["output"]
    return None


def secrets_appear_nowhere(report: dict[str, Any]) -> str | None:
    if problem := _need(report, "secrets"):
        return problem
    hits = report["secrets"]["hits"]
    return f"the canary was found in: {hits}" if hits else None


def configuration_error_stops_after_3_restarts(report: dict[str, Any]) -> str | None:
    if problem := _need(report, "config_error"):
        return problem
    state, later = report["config_error"]["state"], report["config_error"]["5s_later"]
    if state["exit_code"] != 2 or state["restarts"] != 3 or later != state:
        return f"configuration error: {state} -> {later}"
    return None


def compose_wiring_is_the_files(report: dict[str, Any]) -> str | None:
    """Both containers as docker-compose.yml says: UID 1000, one named volume, the secret."""
    if problem := _need(report, "wiring", "volume_owners"):
        return problem
    problems = []
    volume = f"{report['project']}_checkpoints"
    for service in ("trainer", "uploader"):
        w = report["wiring"].get(service)
        if w is None:
            problems.append(f"no {service} container")
            continue
        if w["user"] != "1000:1000":
            problems.append(f"{service} runs as {w['user']!r}")
        if ["volume", volume, "/data/llama3-medical-ner-lora", True] not in [
                list(m) for m in w["mounts"]]:
            problems.append(f"{service} mounts {w['mounts']}")
        if not any(m[0] == "bind" and m[2] == "/run/secrets/hf_token" for m in w["mounts"]):
            problems.append(f"{service} has no secret file at /run/secrets/hf_token")
        if w["hf_token_file"] != "/run/secrets/hf_token" or not w["init"]:
            problems.append(f"{service}: HF_TOKEN_FILE {w['hf_token_file']}, init {w['init']}")
    restart = report["wiring"].get("uploader", {}).get("restart")
    if restart != {"Name": "on-failure", "MaximumRetryCount": 3}:
        problems.append(f"uploader restart policy {restart}")
    if report["volume_owners"] != [[1000, 1000]]:
        problems.append(f"files in the volume owned by {report['volume_owners']}")
    return "; ".join(problems) or None


CHECKS: dict[str, Check] = {f.__name__: f for f in (
    compose_wiring_is_the_files,
    every_checkpoint_verified_on_devhub, uploader_exits_0_when_done_and_stays_exited,
    healthcheck_turns_healthy_while_watching, kill_then_restart_loses_nothing,
    uploader_image_has_no_torch, readme_run_commands_work, secrets_appear_nowhere,
    configuration_error_stops_after_3_restarts)}


def failures(report: dict[str, Any]) -> list[str]:
    problems = [f"{name}: {p}" for name, check in CHECKS.items() if (p := check(report))]
    if "error" in report:
        problems.insert(0, f"scenario: {report['error']}")
    return problems


def summary(report: dict[str, Any]) -> str:
    lines = ["", "== make containers =="]
    engine = report.get("engine", {})
    lines.append(f"engine: dockerd {engine.get('server')} ({engine.get('driver')}), "
                 f"Docker Compose {engine.get('compose')}")
    for image in report.get("images", {}).values():
        lines.append(f"image {image['image']}: {image['size'] / 1e6:.0f} MB on the stand-in "
                     f"{image['base']} ({image['base_size'] / 1e6:.0f} MB); Python "
                     f"{image['python']}; torch: "
                     f"{image.get('torch_version', 'none') if image['torch'] else 'none'}")
    for name, seconds in report.get("timings", {}).items():
        lines.append(f"time {name}: {seconds:.0f} s")
    for name, check in CHECKS.items():
        problem = check(report)
        lines.append(f"{'ok  ' if problem is None else 'FAIL'} {name}")
    return "\n".join(lines)
