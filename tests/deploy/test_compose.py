"""docker-compose.yml, checked statically: volumes, GPU, secrets, restart policy, commands."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import yaml

from tests.deploy import deployfiles as df
from tests.deploy.trainer_docs import trainer_env_name
from trainer.settings import SettingsInputError, TrainerSettings, parse_settings
from uploader.cli import build_parser
from uploader.settings import UploaderSettings, env_name

OUTPUT_ENV = {"trainer": "TRAINER_OUTPUT_DIR", "uploader": "UPLOADER_OUTPUT_DIR"}
TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{10,}")
SECRET_PATH = "/run/secrets/hf_token"


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (dotted path, scalar) in a YAML tree, keys included as scalars."""
    if isinstance(node, dict):
        out: list[tuple[str, Any]] = []
        for key, value in node.items():
            out.append((f"{path}.{key}", key))
            out += walk(value, f"{path}.{key}")
        return out
    if isinstance(node, list):
        return [item for i, value in enumerate(node) for item in walk(value, f"{path}[{i}]")]
    return [(path, node)]


def test_compose_parses_with_both_services() -> None:
    assert set(df.compose()["services"]) == {"trainer", "uploader"}


def test_both_services_mount_the_shared_volume_at_their_output_dir() -> None:
    data = df.compose()
    targets = {}
    for name, env_key in OUTPUT_ENV.items():
        svc = df.service(name)
        output_dir = df.environment(svc).get(env_key)
        assert output_dir, f"{name}: {env_key} is not set in docker-compose.yml"
        mounted = df.mounts(svc)
        assert output_dir in mounted, f"{name}: {env_key}={output_dir} is not a mount target"
        source = mounted[output_dir]
        assert source in (data.get("volumes") or {}), f"{name}: {source!r} is not a named volume"
        targets[name] = (source, output_dir)
    assert targets["trainer"] == targets["uploader"], (
        f"trainer and uploader must share one volume at one path, got {targets}")


def test_output_dir_matches_the_images_defaults() -> None:
    # Each image sets its OUTPUT_DIR and creates that dir owned by the app user, which an empty
    # named volume takes over; a mount elsewhere would be root-owned and unwritable.
    for name, env_key in OUTPUT_ENV.items():
        compose_dir = df.environment(df.service(name))[env_key]
        envs = " ".join(i.args for i in df.only(df.dockerfile(df.DOCKERFILES[name]), "ENV"))
        assert f"{env_key}={compose_dir}" in envs, f"Dockerfile.{name}: ENV {env_key} differs"
        runs = " ".join(i.args for i in df.only(df.dockerfile(df.DOCKERFILES[name]), "RUN"))
        assert f"mkdir -p {compose_dir}" in runs, f"Dockerfile.{name} does not create {compose_dir}"


def test_only_the_trainer_reserves_a_gpu() -> None:
    trainer, uploader = df.service("trainer"), df.service("uploader")
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               for d in devices), devices
    assert "deploy" not in uploader, "the uploader must not reserve devices"
    assert "gpus" not in uploader and "runtime" not in uploader


def test_trainer_keeps_the_hugging_face_cache_on_a_named_volume() -> None:
    trainer = df.service("trainer")
    hf_home = df.environment(trainer).get("HF_HOME")
    assert hf_home, "trainer: HF_HOME is not set"
    source = df.mounts(trainer).get(hf_home)
    assert source in (df.compose().get("volumes") or {}), (
        f"trainer: HF_HOME={hf_home} must be on a named volume, not {source!r}")
    assert source != df.mounts(trainer).get(df.environment(trainer)["TRAINER_OUTPUT_DIR"])


def test_hub_token_comes_only_from_the_secret_file() -> None:
    data = df.compose()
    assert data["secrets"]["hf_token"] == {"file": "./secrets/hf_token"}
    for name in ("trainer", "uploader"):
        svc = df.service(name)
        env = df.environment(svc)
        assert env.get("HF_TOKEN_FILE") == SECRET_PATH, f"{name}: HF_TOKEN_FILE"
        assert "HF_TOKEN" not in env, f"{name}: HF_TOKEN must not be set; the secret file is used"
        assert "hf_token" in [s if isinstance(s, str) else s.get("source")
                              for s in svc.get("secrets", [])], f"{name}: secret hf_token"


def test_no_inline_secrets() -> None:
    text = df.COMPOSE.read_text()
    assert not TOKEN_LIKE.search(text), "docker-compose.yml holds something like a Hub token"
    assert not re.search(r"HF_TOKEN\s*[=:]\s*['\"]?[A-Za-z0-9]", text), "literal HF_TOKEN value"
    for name in ("trainer", "uploader"):
        env = df.environment(df.service(name))
        key = env.get("WANDB_API_KEY")
        assert key is not None and re.fullmatch(r"\$\{WANDB_API_KEY(:?-)?\}", key), (
            f"{name}: WANDB_API_KEY must be exactly ${{WANDB_API_KEY:-}}, not {key!r}")
    # After YAML parsing too: a token split over folded lines would escape the text search.
    for path, value in walk(df.compose()):
        if isinstance(value, str):
            assert not TOKEN_LIKE.search(value), f"{path} looks like a Hub token"


def test_uploader_watches_and_exits_when_done() -> None:
    command = df.service("uploader")["command"]
    assert isinstance(command, list), "use the exec (list) form for the uploader's command"
    assert command[0] == "watch" and "--exit-when-done" in command, command
    # The image's entrypoint is the CLI, so the command must parse as its arguments.
    args = build_parser().parse_args(command)
    assert args.command == "watch" and args.exit_when_done is True


def test_backfill_run_reuses_the_entrypoint() -> None:
    # `docker compose run --rm uploader backfill` replaces only the command.
    uploader = df.service("uploader")
    assert "entrypoint" not in uploader, "overriding the entrypoint breaks `run uploader <verb>`"
    assert "depends_on" not in uploader, "`run --rm uploader backfill` would start the trainer"
    entrypoint = df.exec_form(df.only(df.dockerfile(df.DOCKERFILES["uploader"]),
                                      "ENTRYPOINT")[-1].args)
    assert entrypoint == ["ckpt-uploader"]
    for verb in ("backfill", "status"):
        assert build_parser().parse_args([verb]).command == verb


def test_stop_grace_period_exceeds_the_drain_grace() -> None:
    uploader = df.service("uploader")
    grace = df.duration_seconds(uploader["stop_grace_period"])
    default = UploaderSettings.model_fields["drain_grace"].default
    configured = df.environment(uploader).get("UPLOADER_DRAIN_GRACE")
    drain = float(df.resolve(configured)) if configured else default
    # Margin for recording the state and exiting after the drain, before Docker's SIGKILL.
    assert grace >= max(drain, default) + 10, (
        f"stop_grace_period {grace}s must exceed the drain grace ({drain}s, default {default}s)")


def test_uploader_restart_policy_is_bounded_on_failure() -> None:
    policy = df.service("uploader").get("restart", "")
    match = re.fullmatch(r"on-failure:(\d+)", policy)
    assert match and 1 <= int(match[1]) <= 5, (
        f"uploader: restart must be on-failure:N with a small N, not {policy!r}")
    # The comment right above the policy documents each exit code's fate.
    lines = df.COMPOSE.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("restart: on-failure"))
    comment: list[str] = []
    for line in reversed(lines[:at]):
        if not line.strip().startswith("#"):
            break
        comment.insert(0, line)
    for code in ("exit 0", "exit 1", "exit 2"):
        assert code in "\n".join(comment), f"the comment above the uploader's restart must explain {code}"
    assert df.service("trainer").get("restart") in ("no", False), "the trainer must not restart"


def test_both_builds_get_the_same_uid_and_gid_as_the_dockerfiles() -> None:
    builds = {name: df.service(name)["build"] for name in ("trainer", "uploader")}
    assert builds["trainer"]["args"] == builds["uploader"]["args"]
    for name, build in builds.items():
        assert build["dockerfile"] == df.DOCKERFILES[name].name
        defaults = df.arg_defaults(df.dockerfile(df.DOCKERFILES[name]))
        for arg in ("UID", "GID"):
            assert df.resolve(str(build["args"][arg])) == defaults[arg], (
                f"{name}: build arg {arg} defaults differ from Dockerfile.{name}")


def _settings_env(name: str) -> dict[str, str]:
    """A service's environment as the container sees it on a host with nothing set."""
    env = df.environment(df.service(name))
    return {key: df.resolve(value) for key, value in env.items() if value is not None}


def test_compose_settings_names_are_real_settings() -> None:
    uploader_names = {env_name(field) for field in UploaderSettings.model_fields}
    trainer_names = {trainer_env_name(field) for field in TrainerSettings.model_fields}
    for name, known in (("uploader", uploader_names), ("trainer", trainer_names)):
        prefix = f"{name.upper()}_"
        for key in df.environment(df.service(name)):
            if key.startswith(prefix):
                assert key in known, f"{name}: {key} is not a setting (typo?)"


def test_compose_environment_gives_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # What each container would see on a host with nothing set must pass its settings model.
    for key in list(os.environ):
        if key.startswith(("UPLOADER_", "TRAINER_", "HUB_", "WANDB_", "HF_")):
            monkeypatch.delenv(key)
    for key, value in _settings_env("uploader").items():
        monkeypatch.setenv(key, value)
    uploader = UploaderSettings(_env_file=None)  # type: ignore[call-arg]
    assert str(uploader.output_dir) == _settings_env("uploader")["UPLOADER_OUTPUT_DIR"]
    for key in _settings_env("uploader"):
        monkeypatch.delenv(key)
    for key, value in _settings_env("trainer").items():
        monkeypatch.setenv(key, value)
    try:
        trainer = parse_settings([])
    except SettingsInputError as exc:
        pytest.fail(f"the trainer's compose environment is invalid: {exc}")
    assert str(trainer.output_dir) == str(uploader.output_dir)


def _compose_variables() -> set[str]:
    names = {name for name, _, _ in df.interpolations(df.COMPOSE.read_text())}
    for svc in df.compose()["services"].values():
        names |= {key for key, value in df.environment(svc).items() if value is None}
    return names


def test_env_example_documents_every_variable_compose_reads() -> None:
    text = df.ENV_EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    missing = _compose_variables() - documented
    assert not missing, f".env.example does not mention {sorted(missing)}"
    assert not TOKEN_LIKE.search(text), ".env.example holds something like a Hub token"
    assert not re.search(r"^\s*HF_TOKEN=", text, flags=re.MULTILINE), "HF_TOKEN goes in secrets/"
    uploader_names = {env_name(field) for field in UploaderSettings.model_fields}
    trainer_names = {trainer_env_name(field) for field in TrainerSettings.model_fields}
    for name in documented:
        if name.startswith("UPLOADER_"):
            assert name in uploader_names, f".env.example: {name} is not an uploader setting"
        if name.startswith("TRAINER_"):
            assert name in trainer_names, f".env.example: {name} is not a trainer setting"


def test_yaml_has_no_duplicate_keys() -> None:
    # yaml.safe_load keeps the last of two equal keys silently; compose rejects the file.
    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [k.value for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
        duplicated = {k for k in keys if keys.count(k) > 1}
        assert not duplicated, f"duplicate keys {duplicated} at line {node.start_mark.line + 1}"
        loader.flatten_mapping(node)
        return dict(loader.construct_pairs(node))  # type: ignore[no-untyped-call]

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    assert yaml.load(df.COMPOSE.read_text(), Loader=Strict)  # Strict is a SafeLoader



def test_the_trainers_wandb_runs_land_on_the_checkpoints_volume() -> None:
    # Offline runs must outlive the container, to be `wandb sync`ed later.
    trainer = df.service("trainer")
    wandb_dir = df.environment(trainer).get("WANDB_DIR")
    assert wandb_dir is not None and df.mounts(trainer).get(wandb_dir) == "checkpoints", (
        wandb_dir, df.mounts(trainer))


def test_training_goes_first_for_the_cpu() -> None:
    services = df.compose()["services"]
    trainer_weight = int(services["trainer"].get("cpu_shares", 1024))  # Docker's default
    uploader = services["uploader"]
    assert int(uploader["cpu_shares"]) * 4 <= trainer_weight, "the uploader's CPU weight"
    assert "cpus" not in uploader and "cpu_quota" not in uploader, (
        "a hard CPU cap would throttle hashing even on idle cores")
