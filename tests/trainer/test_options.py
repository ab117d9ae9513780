"""Real-GPU options on a CPU machine: each refused with one line when it cannot work here
(before anything is downloaded), and each wired where it can be checked: QLoRA's config and
k-bit preparation, all-linear as PEFT's string, gradient checkpointing and packing on the tiny
model, the optimizer and the precision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from trainer import model as model_module
from trainer import prompts
from trainer.__main__ import main
from trainer.arguments import training_arguments
from trainer.machine import BITSANDBYTES, FLASH_ATTN, Machine
from trainer.model import (
    LoadSpec,
    from_pretrained_kwargs,
    prepare_for_training,
    quantization_config,
)
from trainer.precision import Precision
from trainer.preflight import PreflightError, check, resolved_optimizer
from trainer.settings import SettingsInputError, TrainerSettings, parse_settings
from trainer.train import build_model, run

CPU = Machine(cuda=False)
AMPERE = Machine(cuda=True, bf16_native=True, gpu_name="A100",
                 packages=frozenset({BITSANDBYTES, FLASH_ATTN}))
TURING = Machine(cuda=True, bf16_native=False, gpu_name="Tesla T4",
                 packages=frozenset({BITSANDBYTES}))
BARE_GPU = Machine(cuda=True, bf16_native=True, gpu_name="L4")


def settings(**values: object) -> TrainerSettings:
    return TrainerSettings(**values)


@pytest.mark.parametrize(
    ("values", "machine", "message"),
    [
        ({"load_in_4bit": True}, CPU, "--load-in-4bit (TRAINER_LOAD_IN_4BIT) needs a CUDA GPU"),
        ({"load_in_4bit": True}, BARE_GPU, "needs the bitsandbytes package"),
        ({"dtype": "bf16"}, TURING, "this GPU (Tesla T4) has no native bf16"),
        ({"dtype": "fp16"}, CPU, "--dtype fp16 (TRAINER_DTYPE): fp16 mixed precision needs a GPU"),
        ({"attn_implementation": "flash_attention_2"}, TURING, "flash-attn package"),
        ({"attn_implementation": "flash_attention_2"}, Machine(
            cuda=False, packages=frozenset({FLASH_ATTN})), "needs a CUDA GPU"),
        ({"attn_implementation": "flash_attention_2", "dtype": "fp32"}, AMPERE,
         "bf16 or fp16 only"),
        ({"optim": "adamw_bogus"}, CPU, "unknown optimizer 'adamw_bogus'"),
        ({"optim": "paged_adamw_8bit"}, CPU, "needs bitsandbytes on a CUDA GPU"),
    ],
)
def test_options_this_machine_cannot_honour_are_refused(
    values: dict[str, object], machine: Machine, message: str
) -> None:
    with pytest.raises(PreflightError) as info:
        check(settings(**values), machine)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("values", "machine", "precision"),
    [
        ({}, CPU, Precision.FP32),
        ({}, AMPERE, Precision.BF16),
        ({}, TURING, Precision.FP16),  # bf16 only where native, never emulated
        ({"dtype": "bf16"}, CPU, Precision.BF16),
        ({"load_in_4bit": True, "attn_implementation": "flash_attention_2"}, AMPERE,
         Precision.BF16),
        ({"load_in_4bit": True}, TURING, Precision.FP16),
        ({"optim": "adamw_torch"}, CPU, Precision.FP32),
    ],
)
def test_options_that_work_resolve_a_precision(
    values: dict[str, object], machine: Machine, precision: Precision
) -> None:
    assert check(settings(**values), machine) is precision


def test_4bit_on_cpu_exits_2_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    # An unreachable Hub: a download attempt would fail with a connection error instead.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    out = tmp_path / "out"
    assert main(["--load-in-4bit", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: --load-in-4bit"), err
    assert not out.exists()  # no run info, no tiny base, nothing


def test_qlora_config_and_kbit_preparation(monkeypatch: pytest.MonkeyPatch) -> None:
    config = quantization_config(Precision.BF16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_compute_dtype == torch.bfloat16
    kwargs = from_pretrained_kwargs(LoadSpec(Precision.BF16, load_in_4bit=True,
                                             attn_implementation="flash_attention_2"), token=None)
    assert kwargs["quantization_config"].load_in_4bit and kwargs["device_map"] == {"": 0}
    assert kwargs["attn_implementation"] == "flash_attention_2"
    assert kwargs["dtype"] == torch.bfloat16
    plain = from_pretrained_kwargs(LoadSpec(Precision.FP32), token=None)
    assert "quantization_config" not in plain and "attn_implementation" not in plain

    calls: list[dict[str, object]] = []

    def fake_prepare(model: object, **kw: object) -> object:
        calls.append(kw)
        return model

    import peft

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", fake_prepare)

    class Config:
        use_cache = True

    class Model:
        config = Config()

    prepared = prepare_for_training(Model(), load_in_4bit=True, gradient_checkpointing=True)
    assert calls == [{"use_gradient_checkpointing": True,
                      "gradient_checkpointing_kwargs": model_module.CHECKPOINTING_KWARGS}]
    assert prepared.config.use_cache is False
    assert resolved_optimizer(settings(load_in_4bit=True)) == "paged_adamw_8bit"
    assert resolved_optimizer(settings()) is None  # transformers' default
    args = training_arguments(settings(optim="adafactor"), bf16=False, run_name="r")
    assert args.optim == "adafactor"


def test_all_linear_reaches_peft_as_its_string(
    small_settings: Callable[..., TrainerSettings],
) -> None:
    s = parse_settings(["--lora-target-modules", "all-linear"])
    assert s.lora_targets == "all-linear"
    assert parse_settings(["--lora-target-modules", "q_proj,v_proj"]).lora_targets == [
        "q_proj", "v_proj"]
    with pytest.raises(SettingsInputError, match="stands alone"):
        parse_settings(["--lora-target-modules", "all-linear,q_proj"])
    tiny = small_settings(lora_target_modules=["all-linear"])
    peft_model = build_model(tiny, tiny.base_model, Precision.FP32, None)
    wrapped = {name.rsplit(".", 1)[-1] for name, module in peft_model.named_modules()
               if hasattr(module, "lora_A")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                       "down_proj"}  # every linear layer but lm_head


class CheckpointingProbe(TrainerCallback):
    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        self.seen.append(bool(model.is_activation_checkpointing))


def test_gradient_checkpointing_on_the_tiny_model(
    small_settings: Callable[..., TrainerSettings],
) -> None:
    # Same gradients with and without recomputation, on one batch.
    tiny = small_settings()
    grads = []
    for checkpointing in (False, True):
        peft_model = build_model(tiny, tiny.base_model, Precision.FP32, None)
        peft_model.train()
        if checkpointing:
            peft_model.activation_checkpointing_enable(
                activation_checkpointing_kwargs=model_module.CHECKPOINTING_KWARGS)
        batch = _batch(tiny)
        peft_model(**batch).loss.backward()
        grads.append({n: p.grad.clone() for n, p in peft_model.named_parameters()
                      if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7)

    # And the Trainer turns it on from the setting.
    probe = CheckpointingProbe()
    result = run(small_settings(gradient_checkpointing=True, max_steps=2, save_steps=2,
                                eval_steps=2), callbacks=[probe], machine=Machine(cuda=False))
    assert result.global_step == 2 and probe.seen == [True, True]


def _batch(s: TrainerSettings) -> dict[str, torch.Tensor]:
    from trainer import dataset
    from trainer.model import load_tokenizer

    tokenizer = load_tokenizer(s.base_model, token=None)
    data = dataset.load_packaged(max_train=3)
    encoded = prompts.encode_dataset(tokenizer, data.train, data.entity_types, 160)
    return prompts.PadCollator(tokenizer.pad_token_id)([encoded[i] for i in range(3)])


def test_packing_gives_the_padded_loss(small_settings: Callable[..., TrainerSettings]) -> None:
    from trainer import dataset
    from trainer.model import load_tokenizer

    tiny = small_settings()
    tokenizer = load_tokenizer(tiny.base_model, token=None)
    data = dataset.load_packaged(max_train=3)
    features = [prompts.encode_dataset(tokenizer, data.train, data.entity_types, 160)[i]
                for i in range(3)]
    packed = prompts.collator(tokenizer.pad_token_id, packing=True)(features)
    padded = prompts.collator(tokenizer.pad_token_id, packing=False)(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    assert packed["position_ids"][0, lengths[0]].item() == 0  # restarts per example
    peft_model = build_model(small_settings(packing=True), tiny.base_model, Precision.FP32,
                             None).eval()
    assert peft_model.config.use_cache is False  # else packed position ids are not boundaries
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**packed).loss, peft_model(**padded).loss)
    # Without the position ids the examples would attend to each other: a different loss.
    # Without the position ids the examples attend to each other: other logits.
    second = slice(lengths[0], lengths[0] + lengths[1])
    with torch.no_grad():
        crossed = peft_model(input_ids=packed["input_ids"]).logits[0, second]
        alone = peft_model(**padded).logits[1, : lengths[1]]
        torch.testing.assert_close(peft_model(**packed).logits[0, second], alone)
    assert (crossed - alone).abs().max() > 1e-3


def test_cpu_threads_default_to_one_for_the_tiny_model() -> None:
    from trainer.train import TINY_CPU_THREADS, cpu_threads

    assert cpu_threads(settings(base_model="tiny"), cuda=False) == TINY_CPU_THREADS == 1
    assert cpu_threads(settings(base_model="tiny", cpu_threads=2), cuda=False) == 2
    assert cpu_threads(settings(), cuda=False) is None  # torch's default for a real model
    assert cpu_threads(settings(base_model="tiny"), cuda=True) is None
