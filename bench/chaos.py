"""Fault campaign: the tiny trainer + `uploader watch --prune --keep-last 1` + devhub, under fire.

Phase 1 (crashes and network): 20% of requests to every Hub endpoint answered 500/502/503/429
(with Retry-After), resets in the middle of uploads, a stalled commit, devhub restarted twice,
and the uploader `kill -9`ed at random moments and restarted at once. `--transfer xet` (the
default: devhub with Xet, the uploader's default transfer) puts the same faults on the Xet
storage requests too (xorbs, shards, reconstructions), resets xorb uploads mid-body and stalls
one shard upload; `--transfer lfs` runs against an LFS-only devhub (`--no-xet`), where the
uploader falls back to LFS by itself, and resets LFS PUTs mid-body.
Phase 2 (rotation): `save_total_limit=2` in the trainer while the uploader runs (no kills: no
sidecar can upload a folder deleted while it was down).
Phase 3 (integrity, `bench.chaos_integrity`): staging impossible for a few seconds, and one
checkpoint rewritten in place while the uploader works on it; every folder must still reach the
Hub byte-identical and no verified copy may hold other bytes than those hashed.

A witness thread hashes every checkpoint the moment its completion marker appears (before
rotation or pruning can delete it) and, when a folder disappears in phase 1 - only the uploader
deletes there - checks that its exact bytes were already on the Hub. At the end every expected
repo is downloaded and compared. The table is printed last; the seed is printed first so a
failing run can be replayed:

    python -m bench.chaos --seed 1 [--transfer xet|lfs] [--kills 20] [--max-steps -1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import chaos_integrity as integrity  # noqa: E402
from bench.chaos_integrity import IntegrityResult  # noqa: E402
from devhub.testing import DevHub  # noqa: E402
from devhub.xet import STORAGE_PREFIX  # noqa: E402
from shared.layout import classify, markers_dir  # noqa: E402
from shared.markers import MarkerError, read_marker  # noqa: E402
from shared.naming import make_repo_name  # noqa: E402

USER, TOKEN = "chaos", "hf_chaos_campaign_token_0123456789"
PREFIX = "llama3-medical-ner"
GENERATED = {"README.md", "checkpoint_manifest.json", ".gitattributes"}
ERROR_RATE = 0.20  # of requests to every Hub endpoint, split evenly over the statuses below
ERROR_STATUSES = (500, 502, 503, 429)
KILL_WINDOW = (0.4, 3.0)  # seconds an uploader lives before its kill -9
WITNESS_POLL = 0.1
UPLOADER_SETTINGS = {
    "UPLOADER_SETTLE_SECONDS": "2", "UPLOADER_SCAN_INTERVAL": "2",
    "UPLOADER_ROUND_BACKOFF": "0.5", "UPLOADER_ROUND_BACKOFF_MAX": "2",
    "UPLOADER_RETRY_ATTEMPTS": "5", "UPLOADER_RETRY_MAX_WAIT": "0.5",
    "UPLOADER_READ_TIMEOUT": "5", "UPLOADER_CONNECT_TIMEOUT": "3",
    "UPLOADER_RUN_END_GRACE": "10",
}
TRANSFERS = ("xet", "lfs")
MID_BODY_RESET_RATE = 0.15
# Requests that carry file bytes, per transfer; the Hub API and (for Xet) the storage service.
UPLOAD_REQUEST = {"xet": ("POST", f"^{STORAGE_PREFIX}/.*/v1/xorbs/"), "lfs": ("PUT", "^/_lfs/")}
FAULTED_PATHS = {"xet": f"^/(api|.*\\.git)/|^{STORAGE_PREFIX}/", "lfs": "^/(api|.*\\.git)/"}


def fault_rules(rng: random.Random, transfer: str = "xet") -> list[dict]:
    share = ERROR_RATE / len(ERROR_STATUSES)
    rules: list[dict] = [{"action": "stall", "path": "/commit/", "times": 1}]
    if transfer == "xet":
        rules.append({"action": "stall", "method": "POST", "path": f"^{STORAGE_PREFIX}/.*/shards",
                      "times": 1})
    method, path = UPLOAD_REQUEST[transfer]
    rules.append({"action": "reset", "when": "mid_body", "method": method, "path": path,
                  "probability": MID_BODY_RESET_RATE, "seed": rng.randrange(1 << 30)})
    for i, status in enumerate(ERROR_STATUSES):
        # Each rule draws only on the requests the earlier ones let through.
        probability = share / (1 - share * i)
        rule = {"action": "status", "status": status, "path": FAULTED_PATHS[transfer],
                "probability": probability, "seed": rng.randrange(1 << 30)}
        if status == 429:
            rule["retry_after"] = 1
        rules.append(rule)
    return rules


@dataclass
class Witnessed:
    repo_id: str
    files: dict[str, str]  # path -> sha256, as the trainer left them
    deleted_unverified: bool = False
    judged: bool = False  # a deletion is judged once, when the witness first misses the folder


@dataclass
class Witness:
    """Hashes each checkpoint as soon as it is complete; judges every deletion in phase 1."""

    output_dir: Path
    hub: DevHub
    judge_deletions: bool
    seen: dict[str, Witnessed] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        while not self.stop.wait(WITNESS_POLL):
            self.poll()

    def poll(self) -> None:
        for path in sorted(markers_dir(self.output_dir).glob("*.json")):
            name = path.stem
            key = f"{name}@{path.stat().st_mtime_ns}"
            if key not in self.seen and classify(name) is not None:
                self._record(name, key)
        for key, item in self.seen.items():
            folder = self.output_dir / key.split("@")[0]
            if self.judge_deletions and not item.judged and not folder.exists():
                item.judged = True
                item.deleted_unverified = not self._on_hub(item)
                if item.deleted_unverified:
                    print(f"PREMATURE DELETION: {folder.name} ({item.repo_id})", flush=True)

    def _record(self, name: str, key: str) -> None:
        try:
            marker = read_marker(self.output_dir, name)
        except MarkerError:
            return
        folder = self.output_dir / name
        if marker is None or not marker.matches(folder):
            return
        try:
            files = {f.path: _sha256(folder / f.path) for f in marker.files
                     if f.path not in GENERATED}
        except FileNotFoundError:
            return
        ref = classify(name)
        assert ref is not None
        repo = make_repo_name(USER, PREFIX, ref.kind, marker.step, marker.written_datetime)
        self.seen[key] = Witnessed(repo.repo_id, files)

    def _on_hub(self, item: Witnessed) -> bool:
        from huggingface_hub import HfApi

        for _ in range(20):  # the Hub itself is under fire: retry the check, not the verdict
            try:
                api = HfApi(endpoint=self.hub.url, token=TOKEN)
                infos = api.get_paths_info(item.repo_id, list(item.files), expand=True)
                remote = {i.path: (i.lfs.sha256 if i.lfs else None) for i in infos}
                return all(remote.get(p) in (sha, None) and p in remote
                           for p, sha in item.files.items())
            except Exception:
                time.sleep(0.5)
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Report:
    seed: int
    transfer: str = "xet"
    faults: Counter = field(default_factory=Counter)
    restarts: int = 0
    devhub_restarts: int = 0
    retries: int = 0
    expected: int = 0
    verified: int = 0
    identical: int = 0
    duplicates: int = 0
    lost: int = 0
    premature: int = 0
    trainer_errors: int = 0
    upload_requests: int = 0  # xorb POSTs (xet) or LFS PUTs (lfs) that devhub answered 2xx
    integrity: IntegrityResult | None = None
    wall: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.duplicates == 0 and self.lost == 0 and self.premature == 0
                and self.trainer_errors == 0 and self.identical == self.expected > 0
                and self.upload_requests > 0
                and self.integrity is not None and self.integrity.ok)

    def table(self) -> str:
        rows = [(f"faults injected: {kind}", str(n)) for kind, n in sorted(self.faults.items())]
        rows += [
            ("uploader restarts (kill -9)", str(self.restarts)),
            ("devhub restarts", str(self.devhub_restarts)),
            ("retries logged by the uploader", str(self.retries)),
            ("checkpoints expected", str(self.expected)),
            ("checkpoints verified", str(self.verified)),
            ("checkpoints byte-identical (re-downloaded)", str(self.identical)),
            ("duplicate repos (must be 0)", str(self.duplicates)),
            ("checkpoints lost (must be 0)", str(self.lost)),
            ("deleted before verification (must be 0)", str(self.premature)),
            ("trainer errors (must be 0)", str(self.trainer_errors)),
            (f"{'xorb uploads' if self.transfer == 'xet' else 'LFS uploads'} accepted",
             str(self.upload_requests)),
            *self._integrity_rows(),
            ("wall time (s)", f"{self.wall:.0f}"),
            ("result", "PASS" if self.ok else "FAIL"),
        ]
        width = max(len(k) for k, _ in rows)
        return self._render(rows, width)

    def _integrity_rows(self) -> list[tuple[str, str]]:
        i = self.integrity
        if i is None:
            return [("phase 3 (integrity)", "not run")]
        return [
            ("phase 3: staging impossible for (s)", f"{i.staging_blocked_s:.1f}"),
            ("phase 3: checkpoints rewritten in place", str(i.rewrites)),
            ("phase 3: folders byte-identical on the Hub", f"{i.identical} of {i.folders}"),
            ("phase 3: folders lost (must be 0)", str(i.lost)),
            ("phase 3: verified copies with other bytes (must be 0)", str(i.damaged_verified)),
            ("phase 3: uploader exit code (must be 0)", str(i.uploader_exit)),
        ]

    def _render(self, rows: list[tuple[str, str]], width: int) -> str:
        lines = [f"chaos campaign, seed {self.seed}, transfer {self.transfer}",
                 f"{'measure':<{width}}  value",
                 f"{'-' * width}  -----"]
        return "\n".join([*lines, *(f"{k:<{width}}  {v}" for k, v in rows)])


class Campaign:
    def __init__(self, seed: int, kills: int, max_steps: int, work: Path,
                 transfer: str = "xet") -> None:
        self.rng = random.Random(seed)
        self.kills = kills
        self.max_steps = max_steps
        self.work = work
        self.transfer = transfer
        self.report = Report(seed, transfer)
        self.logs: list[Path] = []

    def env(self, hub: DevHub, token: str = TOKEN) -> dict[str, str]:
        from tests.support.processes import uploader_env

        return uploader_env(hub.url, token, **UPLOADER_SETTINGS,
                            WANDB_MODE="disabled", TRAINER_REPORT_TO="none")

    def trainer(self, hub: DevHub, out: Path, *extra: str) -> subprocess.Popen:
        log = open(self.work / f"trainer-{out.name}.log", "wb")  # noqa: SIM115
        command = [sys.executable, "-m", "trainer", "--base-model", "tiny", "--output-dir",
                   str(out), "--max-steps", str(self.max_steps), "--f1-max-samples", "16", *extra]
        return subprocess.Popen(command, env=self.env(hub), stdout=log,
                                stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    def uploader(self, hub: DevHub, out: Path, *extra: str) -> subprocess.Popen:
        path = self.work / f"uploader-{len(self.logs)}.log"
        self.logs.append(path)
        command = [sys.executable, "-m", "uploader", "watch", "--output-dir", str(out),
                   "--prune", "--keep-last", "1", *extra]
        return subprocess.Popen(command, env=self.env(hub), stdout=open(path, "wb"),
                                stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    def phase_crashes(self, hub: DevHub, out: Path) -> Witness:
        witness = Witness(out, hub, judge_deletions=True)
        witness.start()
        trainer = self.trainer(hub, out)
        restart_at = set(self.rng.sample(range(1, max(self.kills, 3)), 2))
        for kill in range(self.kills):
            proc = self.uploader(hub, out)
            time.sleep(self.rng.uniform(*KILL_WINDOW))  # a random moment, not a wait on state
            proc.kill()
            proc.wait()
            self.report.restarts += 1
            if kill in restart_at:
                self._restart_devhub(hub)
        self._finish(hub, out, trainer, witness)
        return witness

    def phase_rotation(self, hub: DevHub, out: Path) -> Witness:
        witness = Witness(out, hub, judge_deletions=False)
        witness.start()
        uploader = self.uploader(hub, out)
        trainer = self.trainer(hub, out, "--save-total-limit", "2")
        self._finish(hub, out, trainer, witness, uploader)
        return witness

    def _finish(self, hub: DevHub, out: Path, trainer: subprocess.Popen, witness: Witness,
                uploader: subprocess.Popen | None = None) -> None:
        if trainer.wait(900) != 0:
            self.report.trainer_errors += 1
        if uploader is not None:
            uploader.kill()
            uploader.wait()
        final = self.uploader(hub, out, "--exit-when-done")
        final.wait(900)
        witness.poll()
        witness.stop.set()

    def _restart_devhub(self, hub: DevHub) -> None:
        stalled = self._count_faults(hub)
        hub.restart()  # a restart forgets the rules: add them again, the stall only if unspent
        hub.add_faults([r for r in fault_rules(self.rng, self.transfer)
                        if r["action"] != "stall" or not stalled])
        self.report.devhub_restarts += 1

    def _count_faults(self, hub: DevHub) -> bool:
        """Add the rules' hits to the report; True once the stalled commit has happened."""
        for rule in hub.faults():
            kind = rule["action"] if rule["action"] != "status" else f"status {rule['status']}"
            self.report.faults[kind] += rule.get("hits", 0)
        return self.report.faults["stall"] > 0

    def run(self) -> Report:
        started = time.monotonic()
        with DevHub(self.work / "hub", users={USER: TOKEN, integrity.USER: integrity.TOKEN},
                    seed=self.report.seed, xet=self.transfer == "xet") as hub:
            hub.add_faults(fault_rules(self.rng, self.transfer))
            seen = [self.phase_crashes(hub, self.work / "phase1"),
                    self.phase_rotation(hub, self.work / "phase2")]
            self.report.integrity = integrity.run_phase(
                hub, self.work / "phase3", self.env(hub, integrity.TOKEN), self.rng,
                self.work / "uploader-phase3.log")
            self._count_faults(hub)
            hub.clear_faults()
            self._judge(hub, seen)
            integrity.judge(hub, self.work / "phase3", self.env(hub, integrity.TOKEN),
                            self.report.integrity)
        self.report.retries = sum(p.read_text(errors="replace").count("retrying ")
                                  for p in self.logs)
        self.report.upload_requests = self._uploads(self.work / "hub" / "requests.jsonl")
        for path in self.work.glob("trainer-*.log"):
            if "Traceback" in path.read_text(errors="replace"):
                self.report.trainer_errors += 1
        self.report.wall = time.monotonic() - started
        return self.report

    def _uploads(self, request_log: Path) -> int:
        """Accepted requests carrying file bytes: proof the campaign took the transfer it names."""
        method, path = UPLOAD_REQUEST[self.transfer]
        pattern = re.compile(path)
        count = 0
        for line in request_log.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            status = entry.get("status") or 0
            if entry.get("method") == method and pattern.search(entry.get("path", "")) \
                    and 200 <= status < 300:
                count += 1
        return count

    def _judge(self, hub: DevHub, witnesses: list[Witness]) -> None:
        from huggingface_hub import HfApi, snapshot_download

        api = HfApi(endpoint=hub.url, token=TOKEN)
        expected = {w.repo_id: w for witness in witnesses for w in witness.seen.values()}
        present = [m.id for m in api.list_models(author=USER)]
        self.report.expected = len(expected)
        self.report.duplicates = len(present) - len(set(present) & set(expected))
        self.report.premature = sum(w.deleted_unverified for wi in witnesses
                                    for w in wi.seen.values())
        for repo_id, item in expected.items():
            if repo_id not in present:
                self.report.lost += 1
                continue
            self.report.verified += 1
            local = Path(snapshot_download(repo_id, endpoint=hub.url, token=TOKEN,
                                           local_dir=self.work / "downloads" / repo_id))
            remote = {p: _sha256(local / p) for p in item.files if (local / p).is_file()}
            if remote == item.files:
                self.report.identical += 1


def run_campaign(seed: int, kills: int = 20, max_steps: int = -1,
                 work: Path | None = None, transfer: str = "xet") -> Report:
    own = work is None
    work = work or Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-{transfer}-"))
    try:
        return Campaign(seed, kills, max_steps, work, transfer).run()
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--transfer", choices=TRANSFERS, default="xet",
                        help="xet: devhub with Xet, faults on storage too; lfs: LFS-only devhub")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=-1,
                        help="shorten the trainer's schedule (default: the seed's 450 steps)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep logs and data here (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    print(f"chaos campaign seed {args.seed}, transfer {args.transfer} (replay: python -m "
          f"bench.chaos --seed {args.seed} --transfer {args.transfer})", flush=True)
    report = run_campaign(args.seed, args.kills, args.max_steps, args.work_dir, args.transfer)
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
