"""The training container: fine-tunes a causal LM with LoRA for medical NER and writes local
`checkpoint-<step>` folders, completion markers and run info (see `shared/`); it never uploads.

Modules, in the order a run uses them: `settings` (CLI and env), `machine`, `precision` and
`preflight` (options this machine cannot honour, refused before any download), `records` (the
record shapes) and `dataset` (where the data comes from; `synthetic` generated the shipped data
in `data/`), `prompts` (instruction format, label masking, padding or packing), `tiny` and
`tiny_base` (the shipped tiny demo base, pretrained on the shipped data), `model` (base model,
4-bit, LoRA), `resume` and `hub_restore` (where to resume from), `arguments`
(TrainingArguments), `callbacks` (completion markers), `generate` and `evaluate` (entity F1),
`final` (final adapter), `tracking` (W&B), `train` (the run), `__main__` (the CLI); `errors` and
`logs` serve them all, `memory` computes the README's GPU memory table.
"""
