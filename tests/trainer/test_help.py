"""`python -m trainer --help` as a user reads it: every option described, in a titled section,
its default once and as one would type it, and none of pydantic's type notation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
OPTION = re.compile(r"^  (-\S.*)$")
SECTION = re.compile(r"^(\S.*):$")
DEFAULT = re.compile(r"\(default: [^()]*(?:\([^()]*\)[^()]*)*\)")


@pytest.fixture(scope="module")
def help_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    # Another directory, so no ./.env of the checkout applies; fixed columns, fixed wrapping.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-m", "trainer", "--help"], capture_output=True,
                          text=True, timeout=120, env=env,
                          cwd=tmp_path_factory.mktemp("help"))
    assert done.returncode == 0, done.stderr
    return done.stdout


def options(text: str) -> dict[str, tuple[str, str]]:
    """{first flag: (section, help text)} for each option argparse lists."""
    found: dict[str, tuple[str, str]] = {}
    section, current = "", None
    for line in text.splitlines():
        if (match := SECTION.match(line)) and not line.startswith("usage:"):
            section, current = match.group(1), None
        elif match := OPTION.match(line):
            invocation, *help_part = re.split(r"\s{2,}", match.group(1), maxsplit=1)
            current = invocation.split(",")[0].split()[0]
            found[current] = (section, "".join(help_part).strip())
        elif current and line.startswith("   ") and line.strip():
            section_of, so_far = found[current]
            # argparse wraps after a hyphen too (`--hf-` / `endpoint`): no space added there.
            joiner = "" if so_far.endswith("-") or not so_far else " "
            found[current] = (section_of, f"{so_far}{joiner}{line.strip()}")
        else:
            current = None
    return found


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_every_setting_is_an_option_with_a_description(help_text: str) -> None:
    listed = options(help_text)
    for name in TrainerSettings.model_fields:
        assert flag_of(name) in listed, f"{flag_of(name)} missing from --help"
    for flag, (_, text) in listed.items():
        described = DEFAULT.sub("", text).strip()
        assert described, f"{flag} has no description, only {text!r}"


def test_each_option_shows_its_default_once(help_text: str) -> None:
    for flag, (_, text) in options(help_text).items():
        if flag == "-h":
            continue
        assert len(DEFAULT.findall(text)) == 1, f"{flag}: {text!r}"


def test_no_type_notation_of_pydantic(help_text: str) -> None:
    for leftover in ("null", "default factory", "<lambda>", "list[str]", "{str,", "Optional"):
        assert leftover not in help_text, f"{leftover!r} in --help"


def test_defaults_show_as_typed(help_text: str) -> None:
    listed = options(help_text)
    assert "(default: q_proj,v_proj)" in listed["--lora-target-modules"][1]
    assert re.search(r"\(default: (\./)?llama3-medical-ner-lora\)", listed["--output-dir"][1])
    assert "(default: none)" in listed["--report-to"][1]
    assert "(default: false)" in listed["--load-in-4bit"][1]
    assert "(default: 3)" in listed["--num-train-epochs"][1]
    assert "(default: the token's user)" in listed["--hub-namespace"][1]
    assert "(default: the run id" in listed["--wandb-group"][1]


def test_options_sit_in_titled_sections(help_text: str) -> None:
    listed = options(help_text)
    sections = {flag: section for flag, (section, _) in listed.items()}
    assert sections.pop("-h") == "options"
    assert "other options" not in sections.values(), "a setting missing from HELP_GROUPS"
    assert sections["--lora-r"] == sections["--lora-target-modules"] == "LoRA"
    assert sections["--wandb-project"] == sections["--report-to"] == "W&B"
    assert sections["--hub-namespace"] == sections["--hf-endpoint"] == "Hub"
    assert sections["--dataset"] == "data"


def test_flags_and_env_names_unchanged(help_text: str) -> None:
    # The shared names stay readable flags too (as pydantic-settings adds them).
    assert "--wandb-group str, --wandb-run-group str" in help_text
    assert "TRAINER_<OPTION>" in help_text and "HUB_NAMESPACE" in help_text
