"""What the trainer and the uploader must agree on, defined once. Stdlib only.

- `layout`: which folders in the output dir are checkpoints, where markers, run info and
  staging live.
- `markers`: the completion marker the trainer writes after each save.
- `run_info`: the run's identity and outcome, written by the trainer.
- `naming`: repo ids as the seed names them, recomputable from the local checkpoint.
- `manifest`: `checkpoint_manifest.json`, uploaded with every checkpoint.
- `hashing`: sha256 and git blob sha1 in one pass over a file's bytes.
- `env`: the environment variable names both containers read.
"""
