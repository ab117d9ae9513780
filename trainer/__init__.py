"""The training container: fine-tunes a causal LM with LoRA for medical NER and writes local
`checkpoint-<step>` folders, completion markers and run info (see `shared/`); it never uploads.

Modules, in the order a run uses them: `settings` (CLI and env), `dataset` (JSONL and BIO
loading; `synthetic` generated the shipped data in `data/`), `prompts` (instruction format,
label masking), `tiny` (the tiny demo model), `model` (base model and LoRA), `resume` and
`hub_restore` (where to resume from), `arguments` (TrainingArguments), `callbacks` (completion
markers), `generate` and `evaluate` (entity F1), `final` (final adapter), `tracking` (W&B),
`train` (the run), `__main__` (the CLI); `errors` and `logs` serve them all.
"""
