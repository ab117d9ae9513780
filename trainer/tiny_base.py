"""The demo's base model: the tiny Llama (`trainer.tiny`), pretrained on the shipped corpus.

A random base cannot learn the task in the seed's 450 LoRA steps (its loss stays at ln(vocab)),
and the tiny model needs ~1,000 full-parameter steps before it copies entities out of a
sentence - more than a one-minute demo can spend. So, like a real base model, it is pretrained
once, here, and shipped in `trainer/data/tiny-base/` (~1 MB): on each training sentence
followed by its entities (`<sentence>\\n<JSON answer>`, loss on the answer only), without the
instruction and without the chat template. It can extract, but it has never seen the task's
prompt; the LoRA adapter learns that (eval_loss halves between step 50 and 450, F1 >= 0.5).

`tiny-base.json` records what the files were built from; a test fails when the corpus, the
shape or this recipe change without a rebuild:

    python -m trainer.tiny_base --out trainer/data/tiny-base
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trainer import dataset, prompts
from trainer.logs import configure_logging
from trainer.records import NerExample
from trainer.tiny import CHAT_TEMPLATE, TinySpec, build_model, train_tokenizer

log = logging.getLogger(__name__)

BASE_DIRNAME = "tiny-base"
RECIPE_FILENAME = "tiny-base.json"
FILE_MODE, FOLDER_MODE = 0o644, 0o755


@dataclass(frozen=True)
class PretrainSpec:
    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    seed: int = 0
    threads: int = 2


def packaged_tiny_base() -> Path:
    return dataset.packaged_data_dir() / BASE_DIRNAME


def tiny_base_folder() -> Path | None:
    """The shipped base for `--base-model tiny`; None in an install without it (package data
    not installed)."""
    folder = packaged_tiny_base()
    return folder if (folder / "config.json").is_file() else None


def recipe(examples: list[NerExample], spec: TinySpec, pretrain: PretrainSpec) -> dict[str, Any]:
    """What the shipped files depend on; `fingerprint` changes when any of it does."""
    digest = hashlib.sha256(json.dumps([asdict(spec), asdict(pretrain)]).encode())
    digest.update(CHAT_TEMPLATE.encode())
    for example in examples:
        digest.update(example.text.encode() + b"\0" + prompts.answer_json(example.entities)
                      .encode() + b"\0")
    return {"fingerprint": digest.hexdigest()[:16], "tiny_spec": asdict(spec),
            "pretrain": asdict(pretrain), "examples": len(examples)}


def _encode(tokenizer: Any, example: NerExample) -> prompts.EncodedExample:
    prompt = tokenizer(f"{tokenizer.bos_token}{example.text}\n",
                       add_special_tokens=False)["input_ids"]
    answer = tokenizer(prompts.answer_json(example.entities) + tokenizer.eos_token,
                       add_special_tokens=False)["input_ids"]
    return prompts.EncodedExample(prompt + answer, [prompts.IGNORE_INDEX] * len(prompt) + answer)


def pretrain(model: Any, tokenizer: Any, examples: list[NerExample], spec: PretrainSpec) -> float:
    """Full-parameter training, deterministic (seeded init, sampling and CPU kernels at a fixed
    thread count); returns the last batch's loss."""
    encoded = prompts.EncodedDataset([_encode(tokenizer, ex) for ex in examples])
    collate = prompts.PadCollator(tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        1.0, (step + 1) / spec.warmup_steps) * max(0.0, 1 - step / spec.steps))
    rng = random.Random(spec.seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(spec.steps):
        batch = collate([encoded[rng.randrange(len(encoded))] for _ in range(spec.batch_size)])
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 100 == 0:
            log.info("pretraining", extra={"step": step, "loss": round(loss.item(), 4)})
    model.eval()
    return loss.item()


def build(out: Path, examples: list[NerExample], spec: TinySpec | None = None,
          pretrain_spec: PretrainSpec | None = None) -> dict[str, Any]:
    """Tokenizer trained on the corpus, tiny model, pretraining; written atomically to `out`."""
    spec, pretrain_spec = spec or TinySpec(), pretrain_spec or PretrainSpec()
    types = sorted({e.type for ex in examples for e in ex.entities})
    threads = torch.get_num_threads()
    torch.set_num_threads(pretrain_spec.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(pretrain_spec.seed)
            tokenizer = train_tokenizer(prompts.tokenizer_corpus(examples, types),
                                        spec.vocab_size)
            model = build_model(tokenizer, spec)
            started = time.monotonic()
            loss = pretrain(model, tokenizer, examples, pretrain_spec)
    finally:
        torch.set_num_threads(threads)
    info = {**recipe(examples, spec, pretrain_spec), "final_loss": round(loss, 4)}
    log.info("tiny base pretrained", extra={"seconds": round(time.monotonic() - started),
                                            "loss": info["final_loss"]})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-base-build-", dir=out.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / RECIPE_FILENAME).write_text(json.dumps(info, indent=2) + "\n")
        for path in staging.iterdir():  # safetensors writes 0600, mkdtemp 0700: shipped files
            path.chmod(FILE_MODE)
        staging.chmod(FOLDER_MODE)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.tiny_base",
                                     description="Pretrain the tiny demo base on the shipped data.")
    parser.add_argument("--out", type=Path, default=packaged_tiny_base())
    parser.add_argument("--steps", type=int, default=PretrainSpec.steps)
    args = parser.parse_args(argv)
    configure_logging()
    info = build(args.out, dataset.load_packaged().train, pretrain_spec=PretrainSpec(args.steps))
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
