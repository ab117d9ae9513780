"""Phase 3 of the fault campaign: staging that fails for a while, and a checkpoint rewritten in
place while the uploader works on it, both under the campaign's network faults.

Synthetic checkpoints (no trainer), in their own namespace so phases 1-2 are judged alone. The
judge: every folder left on disk is on the Hub byte-identical under the repo its marker names
(nothing lost, whatever staging did), and `uploader verify --deep` finds no verified copy whose
bytes differ from what was hashed (an in-place rewrite never passes as the old version).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devhub.testing import DevHub
from shared.layout import list_folders
from shared.markers import read_marker
from shared.naming import make_repo_name

USER, TOKEN = "integrity", "hf_chaos_integrity_token_0123456789"
PREFIX = "llama3-medical-ner"
STEPS = (50, 100, 150, 200)
BLOCKED_S = (2.0, 6.0)  # how long staging stays impossible
REWRITE_DELAY_S = (0.0, 1.5)  # from a marker to the in-place rewrite of that checkpoint
EXIT_TIMEOUT_S = 600


@dataclass
class IntegrityResult:
    staging_blocked_s: float = 0.0
    rewrites: int = 0
    folders: int = 0
    identical: int = 0
    lost: int = 0
    damaged_verified: int = 0  # verified copies whose bytes are not what was hashed
    uploader_exit: int | None = None

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.damaged_verified == 0 and self.identical == self.folders
                and self.uploader_exit == 0)


def run_phase(hub: DevHub, out: Path, env: dict[str, str], rng: random.Random,
              log: Path) -> IntegrityResult:
    from shared.run_info import Outcome, finish_run, start_run
    from tests.support.checkpoints import write_checkpoint

    result = IntegrityResult()
    info = start_run(out, base_model="tiny", resume=False)
    blocker = out / ".uploader" / "staging"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("staging is impossible while this file is here")
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "uploader", "watch", "--output-dir",
                                 str(out), "--exit-when-done"], env=env, stdout=sink,
                                stderr=subprocess.STDOUT)
        for i, step in enumerate(STEPS):
            write_checkpoint(out, step, run_id=info.run_id, adapter_bytes=512 * 1024)
            if i == 0:
                result.staging_blocked_s = rng.uniform(*BLOCKED_S)
                time.sleep(result.staging_blocked_s)  # a fault lasting that long, not a sync
                blocker.unlink()
            if step == STEPS[-2]:
                time.sleep(rng.uniform(*REWRITE_DELAY_S))
                _rewrite_in_place(out / f"checkpoint-{step}" / "optimizer.pt")
                # A trainer re-saving the step writes its marker again, for the new bytes.
                write_checkpoint(out, step, run_id=info.run_id, adapter_bytes=512 * 1024, seed=7)
                result.rewrites += 1
        finish_run(out, Outcome.COMPLETED)
        try:
            result.uploader_exit = proc.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return result


def _rewrite_in_place(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # the same inode, as torch.save over an existing file
        fh.write(random.randbytes(size))


def judge(hub: DevHub, out: Path, env: dict[str, str], result: IntegrityResult) -> None:
    """After the campaign's faults are cleared: what reached the Hub, read back."""
    from huggingface_hub import HfApi, snapshot_download

    from tests.support.checkpoints import folder_bytes

    api = HfApi(endpoint=hub.url, token=TOKEN)
    present = sorted(m.id for m in api.list_models(author=USER))
    for ref in list_folders(out):
        marker = read_marker(out, ref.name)
        if marker is None:
            continue
        result.folders += 1
        # The marker's second names the repo, or the next free one when an earlier version
        # of the folder took it (a re-save within the same second): look at this step's repos.
        named = make_repo_name(USER, PREFIX, ref.kind, marker.step, marker.written_datetime)
        stem = named.repo_id.rsplit("-", 1)[0] + "-"
        candidates = [r for r in present if r.startswith(stem)]
        local = {p: data for p, data in folder_bytes(ref.path(out)).items() if p != "README.md"}
        found = False
        for n, repo_id in enumerate(candidates):
            remote = folder_bytes(Path(snapshot_download(
                repo_id, endpoint=hub.url, token=TOKEN,
                local_dir=out.parent / "integrity-dl" / f"{ref.name}-{n}")))
            found = found or all(remote.get(p) == data for p, data in local.items())
        result.identical += found
        result.lost += not found
    deep = subprocess.run([sys.executable, "-m", "uploader", "verify", "--deep", "--output-dir",
                           str(out), "--log-format", "json"], env=env, capture_output=True,
                          text=True, timeout=EXIT_TIMEOUT_S)
    damaged = [json.loads(line) for line in deep.stderr.splitlines() if line.startswith("{")]
    result.damaged_verified = sum("damaged" in str(d.get("message", "")) for d in damaged)
