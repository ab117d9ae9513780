"""A user's own TRL SFTTrainer script with the sidecar's two lines added (see the README).

    python sft_user_script.py MODEL_DIR OUTPUT_DIR [PROBE_FILE]

A probe callback, after the sidecar's, appends one JSON line per save and rank to PROBE_FILE:
what the marker said right then. The test reads those lines.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer

from shared.markers import read_marker
from trainer.sidecar import SidecarCallback


class Probe(TrainerCallback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_save(self, args, state, control, **kwargs):
        name = f"checkpoint-{state.global_step}"
        marker = read_marker(Path(args.output_dir), name) if state.is_world_process_zero else None
        with self.path.open("a") as f:
            f.write(json.dumps({
                "rank": int(os.environ.get("RANK", "0")), "step": state.global_step,
                "marker": marker is not None,
                "matches": marker is not None and marker.matches(Path(args.output_dir) / name),
                "files": sorted(f.path for f in marker.files) if marker else []}) + "\n")


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    probe = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    data = Dataset.from_list([{"text": f"Patient {i} was diagnosed with diabetes."}
                              for i in range(16)])
    config = SFTConfig(output_dir=out, max_steps=4, save_steps=2, logging_steps=2,
                       per_device_train_batch_size=2, max_length=32, report_to="none",
                       use_cpu=True, dataloader_num_workers=0, save_strategy="steps")
    trainer = SFTTrainer(model=model, args=config, train_dataset=data,
                         processing_class=tokenizer)
    trainer.add_callback(SidecarCallback())  # the sidecar's line
    if probe is not None:
        trainer.add_callback(Probe(probe))
    trainer.train()


if __name__ == "__main__":
    main()
