"""Settings: the seed's defaults, TRAINER_* and shared env names, flags over env, one-line errors,
and no Hub token in TrainingArguments or the training_args.bin pickle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.__main__ import main
from trainer.arguments import training_arguments
from trainer.settings import SettingsInputError, TrainerSettings, parse_settings

TOKEN = "hf_secret_token_that_must_not_leak"


def test_defaults_are_the_seed_numbers() -> None:
    s = parse_settings([])
    assert s.base_model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert s.output_dir == Path("./llama3-medical-ner-lora")
    assert (s.per_device_train_batch_size, s.gradient_accumulation_steps) == (4, 4)
    assert (s.num_train_epochs, s.save_steps, s.eval_steps) == (3, 50, 50)
    assert s.save_total_limit is None
    assert s.dtype == "auto" and s.resume is None and s.report_to == "none"
    assert not s.load_in_4bit and not s.gradient_checkpointing and not s.packing
    assert (s.attn_implementation, s.optim) == ("auto", "auto")
    assert (s.train_split, s.validation_split, s.dataset_config) == ("train", None, None)
    assert s.hub_repo_prefix == "llama3-medical-ner" and s.hub_namespace is None


def test_env_vars_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINER_BASE_MODEL", "tiny")
    monkeypatch.setenv("TRAINER_SAVE_TOTAL_LIMIT", "3")
    monkeypatch.setenv("TRAINER_LORA_TARGET_MODULES", "q_proj,k_proj,v_proj")
    monkeypatch.setenv("TRAINER_DTYPE", "fp32")
    monkeypatch.setenv("TRAINER_GRADIENT_CHECKPOINTING", "true")
    monkeypatch.setenv("TRAINER_DATASET_CONFIG", "bc5cdr")
    monkeypatch.setenv("HUB_NAMESPACE", "alice")
    monkeypatch.setenv("HUB_REPO_PREFIX", "demo")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    s = parse_settings(["--save-total-limit", "2", "--resume", "hub", "--report-to", "wandb"])
    assert s.is_tiny and s.dtype == "fp32" and s.gradient_checkpointing
    assert s.dataset_config == "bc5cdr"
    assert s.save_total_limit == 2  # the flag wins over TRAINER_SAVE_TOTAL_LIMIT
    assert s.lora_target_modules == ["q_proj", "k_proj", "v_proj"]
    assert (s.hub_namespace, s.hub_repo_prefix, s.hf_endpoint) == (
        "alice", "demo", "http://127.0.0.1:1")
    assert (s.resume, s.report_to, s.wandb_project) == ("hub", "wandb", "proj")


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--save-total-limit", "abc"], {}, "--save-total-limit (TRAINER_SAVE_TOTAL_LIMIT)"),
        (["--resume", "yesterday"], {}, "--resume (TRAINER_RESUME)"),
        ([], {"HUB_NAMESPACE": "no spaces"}, "--hub-namespace (HUB_NAMESPACE)"),
        (["--lora-r", "0"], {}, "--lora-r (TRAINER_LORA_R)"),
        (["--dtype", "int8"], {}, "--dtype (TRAINER_DTYPE)"),
        (["--attn-implementation", "flash"], {}, "--attn-implementation (TRAINER_ATTN_IMPLEMENTATION)"),
        (["--no-such-flag", "1"], {}, "unrecognized arguments"),
    ],
)
def test_invalid_settings_are_one_line(
    argv: list[str], env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsInputError) as info:
        parse_settings(argv)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and expected in err[0]


def test_unreadable_token_file_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN_FILE", str(tmp_path / "missing"))
    assert main([]) == 2
    assert "HF_TOKEN_FILE" in capsys.readouterr().err


def test_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--base-model", "--dataset", "--output-dir", "--resume", "--lora-r",
                 "--report-to", "--max-seq-length"):
        assert flag in out


def test_no_token_in_training_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    settings = TrainerSettings(base_model="tiny", output_dir=tmp_path)
    assert TOKEN not in settings.model_dump_json()
    args = training_arguments(settings, bf16=False, run_name="r")
    assert args.hub_token is None and args.push_to_hub is False
    assert TOKEN not in repr(args.to_dict())
    torch.save(args, tmp_path / "training_args.bin")  # what Trainer writes in every checkpoint
    assert TOKEN.encode() not in (tmp_path / "training_args.bin").read_bytes()


def test_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, trainer.__main__ as m\n"
            "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr


def test_empty_env_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker compose passes `TRAINER_RESUME:` through as an empty string when it is unset.
    for name in ("TRAINER_RESUME", "TRAINER_SAVE_TOTAL_LIMIT", "TRAINER_MAX_STEPS",
                 "HUB_NAMESPACE"):
        monkeypatch.setenv(name, "")
    s = parse_settings([])
    assert s.resume is None and s.save_total_limit is None and s.max_steps == -1
    assert s.hub_namespace is None
    assert parse_settings(["--resume", "none"]).resume is None
