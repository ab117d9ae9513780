"""`make demo`: the whole job on one machine, exactly as compose runs it, with no GPU and no Hub.

devhub (a local Hub) on loopback, then the trainer (tiny model, CPU, the seed's numbers: 9
checkpoints + the final adapter) and `uploader watch --exit-when-done` as two separate processes
sharing the output dir. It prints the uploaded repos and where the offline W&B runs are, and ends
by naming the best checkpoint's repo and its eval_loss.

    python scripts/demo.py [--work-dir demo-output] [--max-steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from devhub.testing import DevHub  # noqa: E402

USER = "demo"
# devhub's token, not a real Hub one; DEMO_HF_TOKEN overrides it (the security test passes a canary)
TOKEN = os.environ.get("DEMO_HF_TOKEN", "hf_demo_write_token_for_devhub_only")
TIMEOUT = 600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "demo-output")
    parser.add_argument("--max-steps", type=int, default=-1,
                        help="shorten the run (default: the seed's 3 epochs, 450 steps)")
    args = parser.parse_args(argv)
    work = args.work_dir.resolve()
    if work.exists():
        shutil.rmtree(work)
    out = work / "llama3-medical-ner-lora"
    out.mkdir(parents=True)
    with DevHub(work / "hub", users={USER: TOKEN}) as hub:
        print(f"devhub listening on {hub.url} (data in {work / 'hub'})", flush=True)
        env = demo_env(hub.url, work)
        trainer = start("trainer", [sys.executable, "-m", "trainer", "--base-model", "tiny",
                                    "--output-dir", str(out), "--report-to", "wandb",
                                    "--max-steps", str(args.max_steps)], env, work)
        uploader = start("uploader", [sys.executable, "-m", "uploader", "watch",
                                      "--output-dir", str(out), "--exit-when-done"], env, work)
        trainer_rc = trainer.wait(TIMEOUT)
        print(f"trainer exited {trainer_rc}; waiting for the uploader to finish", flush=True)
        uploader_rc = uploader.wait(TIMEOUT)
        print(f"uploader exited {uploader_rc}", flush=True)
        rows = status(out, env)
    report(rows, work, out)
    return 0 if trainer_rc == 0 and uploader_rc == 0 and rows else 1


def demo_env(endpoint: str, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "UPLOADER_",
                                                                      "TRAINER_", "HUB_"))}
    env.update({
        "HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HOME": str(work / "hf-home"),
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(work),
        "WANDB_PROJECT": "llama3-medical-ner-demo", "TOKENIZERS_PARALLELISM": "false",
        "UPLOADER_SETTLE_SECONDS": "5", "PYTHONUNBUFFERED": "1",
    })
    return env


def start(name: str, command: list[str], env: dict[str, str], work: Path) -> subprocess.Popen:
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
    print(f"started {name}: {' '.join(command[1:])} (log: {work / (name + '.log')})", flush=True)
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=REPO_ROOT)


def status(out: Path, env: dict[str, str]) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "uploader", "status", "--json",
                             "--output-dir", str(out)], env=env, capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)


def report(rows: list[dict], work: Path, out: Path) -> None:
    print()
    print(f"{'step':>5}  {'kind':<10} {'verified':<8} {'eval_loss':>9}  repo id / URL")
    for row in rows:
        loss = f"{row['eval_loss']:.4f}" if row["eval_loss"] is not None else "-"
        mark = "*" if row["best"] else " "
        print(f"{row['step']:>5}{mark} {row['kind']:<10} {row['state'] == 'verified'!s:<8} "
              f"{loss:>9}  {row['repo_id']}\n{'':37}{row['url']}")
    print("* best by eval_loss")
    print()
    print(f"offline W&B runs (WANDB_DIR): the trainer's and the uploader's in {work / 'wandb'}")
    print("  (upload them later with `wandb sync <run dir>`)")
    print(f"logs: {work / 'trainer.log'}, {work / 'uploader.log'}")
    best = next((row for row in rows if row["best"]), None)
    if best is not None:
        print(f"best checkpoint by eval_loss: {best['repo_id']} (step {best['step']}, "
              f"eval_loss {best['eval_loss']:.4f})")


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"demo finished in {time.monotonic() - started:.0f} s (exit {code})")
    sys.exit(code)
