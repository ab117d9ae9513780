"""deploy/k8s/, checked offline: every manifest against the Kubernetes schemas (the
`kubernetes-validate` package ships them), then the invariants the README promises - native
sidecar, one volume at one path, one non-root UID, the token as a Secret file, no inline
secrets, health probes, a grace period that covers the drain, and the backfill Job."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy import deployfiles as df
from tests.deploy.test_compose import walk
from tests.deploy.trainer_docs import trainer_env_name
from trainer.settings import TrainerSettings
from uploader.cli import build_parser, settings_from
from uploader.cli.console import TRACKING_CLOSE_TIMEOUT
from uploader.settings import UploaderSettings, env_name

K8S = df.ROOT / "deploy" / "k8s"
MANIFESTS = sorted(K8S.rglob("*.yaml"))
# Native sidecars are on by default from 1.29; the newest schemas catch removed fields early.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
TRAINING, BACKFILL = "llama3-medical-ner-train", "llama3-medical-ner-backfill"
HEALTH_PROBE = ["ckpt-uploader", "status", "--health"]
TOKEN_LIKE = re.compile(r"\b(hf|api_org)_[A-Za-z0-9]{10,}")
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD", re.IGNORECASE)
# The trainer's SIGTERM path only records the run as failed; the rest is a margin for exiting.
TRAINER_STOP_S = 15
EXIT_MARGIN_S = 10
EXIT_CONFIG = 2


def documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in MANIFESTS
            for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def resource(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r} in deploy/k8s, found {len(found)}"
    return found[0]


def pod(job: str) -> dict[str, Any]:
    return resource("Job", job)["spec"]["template"]["spec"]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    every = spec.get("initContainers", []) + spec.get("containers", [])
    found = [c for c in every if c["name"] == name]
    assert len(found) == 1, f"expected one container {name!r}, found {len(found)}"
    return found[0]


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def env_value(c: dict[str, Any], name: str) -> str:
    entry = env(c).get(name)
    assert entry is not None and "value" in entry, f"{c['name']}: {name} has no literal value"
    return str(entry["value"])


def settings_env(spec: dict[str, Any], c: dict[str, Any]) -> dict[str, str]:
    """What the container sees: its ConfigMaps' data, then its own literal env."""
    values: dict[str, str] = {}
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        values |= {k: str(v) for k, v in resource("ConfigMap", ref)["data"].items()}
    return values | {k: str(e["value"]) for k, e in env(c).items() if "value" in e}


def mount_of(c: dict[str, Any], path: str) -> dict[str, Any]:
    found = [m for m in c.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(found) == 1, f"{c['name']}: nothing mounted at {path}"
    return found[0]


def volume(spec: dict[str, Any], name: str) -> dict[str, Any]:
    found = [v for v in spec["volumes"] if v["name"] == name]
    assert len(found) == 1, f"no volume {name!r}"
    return found[0]


def image_env(name: str, key: str) -> str:
    envs = " ".join(i.args for i in df.only(df.dockerfile(df.DOCKERFILES[name]), "ENV"))
    match = re.search(rf"\b{key}=(\S+)", envs)
    assert match, f"Dockerfile.{name} sets no {key}"
    return match.group(1)


# ------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        try:  # strict: an unknown or misspelt field fails instead of being ignored by kubectl
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {where}: "
                        f"{exc.message}")


def test_the_validator_rejects_an_unknown_field() -> None:
    # The check above must be able to fail: a typo in the sidecar's restartPolicy is caught.
    broken = yaml.safe_load((K8S / "training-job.yaml").read_text())
    sidecar = broken["spec"]["template"]["spec"]["initContainers"][0]
    sidecar["restartPolicyy"] = sidecar.pop("restartPolicy")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_resources_and_no_duplicate_keys() -> None:
    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [k.value for k, _ in node.value]
        duplicated = {k for k in keys if keys.count(k) > 1}
        assert not duplicated, f"duplicate keys {duplicated} at line {node.start_mark.line + 1}"
        return dict(loader.construct_pairs(node))  # type: ignore[no-untyped-call]

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in MANIFESTS:
        list(yaml.load_all(path.read_text(), Loader=Strict))  # Strict is a SafeLoader
    kinds = sorted((d["kind"], d["metadata"]["name"]) for _, d in documents())
    assert ("Job", TRAINING) in kinds and ("Job", BACKFILL) in kinds, kinds
    # The backfill must not start with `kubectl apply -f deploy/k8s/` (not recursive).
    assert {p.parent for p in MANIFESTS if BACKFILL in p.read_text()} == {K8S / "backfill"}


# ------------------------------------------------------------------------- the training pod


def test_uploader_is_a_native_sidecar_of_the_trainer() -> None:
    spec = pod(TRAINING)
    assert spec["restartPolicy"] == "Never"
    sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    assert [c["name"] for c in sidecars] == ["uploader"], "the uploader must be a native sidecar"
    assert [c["name"] for c in spec["containers"]] == ["trainer"]
    assert "uploader" in container(spec, "uploader")["image"]
    assert "trainer" in container(spec, "trainer")["image"]
    # The image's entrypoint is the CLI; exiting on its own would only get it restarted.
    args = container(spec, "uploader")["args"]
    assert args[0] == "watch" and "--exit-when-done" not in args, args
    assert build_parser().parse_args(args).command == "watch"
    assert resource("Job", TRAINING)["spec"]["backoffLimit"] == 0, "no automatic re-training"


def test_trainer_and_uploader_share_one_volume_at_one_path() -> None:
    spec = pod(TRAINING)
    trainer, uploader = container(spec, "trainer"), container(spec, "uploader")
    output = env_value(trainer, "TRAINER_OUTPUT_DIR")
    assert env_value(uploader, "UPLOADER_OUTPUT_DIR") == output
    assert image_env("trainer", "TRAINER_OUTPUT_DIR") == output
    assert image_env("uploader", "UPLOADER_OUTPUT_DIR") == output
    mounts = [mount_of(trainer, output), mount_of(uploader, output)]
    assert mounts[0]["name"] == mounts[1]["name"], "not the same volume"
    assert all("subPath" not in m and not m.get("readOnly") for m in mounts), mounts
    claim = volume(spec, mounts[0]["name"])["persistentVolumeClaim"]["claimName"]
    resource("PersistentVolumeClaim", claim)
    backfill = pod(BACKFILL)
    mount = mount_of(container(backfill, "backfill"), output)
    assert volume(backfill, mount["name"])["persistentVolumeClaim"]["claimName"] == claim


@pytest.mark.parametrize("job", [TRAINING, BACKFILL])
def test_every_container_runs_as_the_images_non_root_uid(job: str) -> None:
    defaults = df.arg_defaults(df.dockerfile(df.DOCKERFILES["uploader"]))
    uid, gid = int(defaults["UID"]), int(defaults["GID"])
    spec = pod(job)
    context = spec["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid)
    for c in spec.get("initContainers", []) + spec["containers"]:
        own = c.get("securityContext", {})
        assert own.get("runAsUser", uid) == uid and own.get("runAsGroup", gid) == gid, c["name"]
        assert own.get("allowPrivilegeEscalation") is False, c["name"]


@pytest.mark.parametrize("job,name", [(TRAINING, "trainer"), (TRAINING, "uploader"),
                                      (BACKFILL, "backfill")])
def test_hub_token_is_a_secret_file(job: str, name: str) -> None:
    spec = pod(job)
    c = container(spec, name)
    assert "HF_TOKEN" not in env(c), f"{name}: HF_TOKEN must not be set; use the file"
    token_file = Path(env_value(c, "HF_TOKEN_FILE"))
    mount = mount_of(c, str(token_file.parent))
    # No subPath: a rotated Secret reaches the file only through a directory mount.
    assert mount.get("readOnly") is True and "subPath" not in mount, mount
    secret = volume(spec, mount["name"])["secret"]
    assert [item["path"] for item in secret["items"]] == [token_file.name]
    mode = secret["defaultMode"]
    assert mode & 0o040 and not mode & 0o007, f"mode {mode:o}: group-readable, never others"


def test_no_inline_secrets() -> None:
    for path in MANIFESTS:
        assert not TOKEN_LIKE.search(path.read_text()), f"{path.name} holds something like a token"
    for path, doc in documents():
        assert doc["kind"] != "Secret", f"{path.name}: create Secrets with kubectl, not here"
        for where, value in walk(doc):
            if isinstance(value, str):
                assert not TOKEN_LIKE.search(value), f"{path.name}{where} looks like a token"
    for _, doc in documents():
        if doc["kind"] == "ConfigMap":
            secretish = [k for k in doc["data"] if SECRET_NAME.search(k)]
            assert not secretish, f"ConfigMap {doc['metadata']['name']} holds {secretish}"
    for job in (TRAINING, BACKFILL):
        spec = pod(job)
        for c in spec.get("initContainers", []) + spec["containers"]:
            for name, entry in env(c).items():
                if SECRET_NAME.search(name) and not name.endswith("_FILE"):
                    assert "value" not in entry and "secretKeyRef" in entry.get("valueFrom", {}), (
                        f"{job}/{c['name']}: {name} must come from a Secret")


def test_wandb_settings_come_from_the_configmap_and_a_secret() -> None:
    spec = pod(TRAINING)
    for name in ("trainer", "uploader"):
        c = container(spec, name)
        seen = settings_env(spec, c)
        assert seen.get("WANDB_PROJECT") and seen.get("WANDB_MODE"), f"{name}: W&B settings"
        ref = env(c)["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is True, "offline W&B must not need the key"


def test_probes_run_the_uploader_health_check() -> None:
    uploader = container(pod(TRAINING), "uploader")
    for probe in ("startupProbe", "livenessProbe"):
        command = uploader[probe]["exec"]["command"]
        assert command == HEALTH_PROBE, f"{probe}: {command}"
        assert uploader[probe]["timeoutSeconds"] >= 5, f"{probe}: the CLI needs time to start"
    settings = settings_from(build_parser().parse_args(HEALTH_PROBE[1:]))
    assert settings.health is True


def test_grace_period_covers_the_drain() -> None:
    spec = pod(TRAINING)
    drain = UploaderSettings(drain_grace=env_value(container(spec, "uploader"),
                                                   "UPLOADER_DRAIN_GRACE")).drain_grace
    needed = TRAINER_STOP_S + drain + TRACKING_CLOSE_TIMEOUT + EXIT_MARGIN_S
    assert spec["terminationGracePeriodSeconds"] >= needed, (
        f"terminationGracePeriodSeconds must cover the trainer's stop, the {drain:g} s drain, "
        f"closing W&B and exiting: at least {needed:g}")
    assert drain > 0, "without a drain the upload in flight is always abandoned"


# ----------------------------------------------------------------------- the backfill Job


def test_backfill_job_completes_what_the_sidecar_left() -> None:
    job = resource("Job", BACKFILL)
    spec = job["spec"]["template"]["spec"]
    c = container(spec, "backfill")
    assert spec["restartPolicy"] == "Never"
    assert "uploader" in c["image"] and c["args"] == ["backfill"]
    assert build_parser().parse_args(c["args"]).command == "backfill"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert any(r["action"] == "FailJob" and r["onExitCodes"]["containerName"] == "backfill"
               and EXIT_CONFIG in r["onExitCodes"]["values"] for r in rules), (
        "a configuration error (exit 2) must fail the Job at once, not be retried")


# ------------------------------------------------------------------------------- settings


def test_settings_names_are_real_settings() -> None:
    uploader_names = {env_name(field) for field in UploaderSettings.model_fields}
    trainer_names = {trainer_env_name(field) for field in TrainerSettings.model_fields}
    seen: set[str] = set()
    for job in (TRAINING, BACKFILL):
        spec = pod(job)
        for c in spec.get("initContainers", []) + spec["containers"]:
            seen |= set(settings_env(spec, c))
    for key in sorted(seen):
        if key.startswith("UPLOADER_"):
            assert key in uploader_names, f"{key} is not an uploader setting (typo?)"
        if key.startswith("TRAINER_"):
            assert key in trainer_names, f"{key} is not a trainer setting (typo?)"


@pytest.mark.parametrize("job,name", [(TRAINING, "uploader"), (BACKFILL, "backfill")])
def test_uploader_environment_gives_valid_settings(job: str, name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("UPLOADER_", "HUB_", "WANDB_", "HF_")):
            monkeypatch.delenv(key)
    spec = pod(job)
    values = settings_env(spec, container(spec, name))
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = UploaderSettings(_env_file=None)  # type: ignore[call-arg]
    assert str(settings.output_dir) == values["UPLOADER_OUTPUT_DIR"]


def test_readme_names_the_files_and_the_sequence() -> None:
    text = (K8S / "README.md").read_text()
    for path in MANIFESTS:
        assert str(path.relative_to(K8S)) in text, f"README.md does not mention {path.name}"
    for words in ("terminationGracePeriodSeconds", "UPLOADER_DRAIN_GRACE", "emptyDir",
                  "backfill", "NODE_RANK", "kubectl create secret"):
        assert words in text, f"README.md does not explain {words}"


def test_the_trainers_wandb_runs_land_on_the_checkpoints_volume_in_k8s() -> None:
    trainer = container(pod(TRAINING), "trainer")
    wandb_dir = {e["name"]: e.get("value") for e in trainer["env"]}.get("WANDB_DIR")
    mounts = {m["mountPath"]: m["name"] for m in trainer["volumeMounts"]}
    assert wandb_dir is not None and mounts.get(wandb_dir) == "checkpoints", (wandb_dir, mounts)


def test_training_goes_first_for_the_cpu() -> None:
    spec = pod(TRAINING)
    trainer, uploader = container(spec, "trainer"), container(spec, "uploader")

    def millicores(value: str) -> float:
        return float(value[:-1]) if value.endswith("m") else float(value) * 1000

    requests = trainer["resources"].get("requests", {})
    # Without a request the trainer's cgroup weight is the minimum: the uploader would win.
    assert "cpu" in requests, "the trainer needs a CPU request"
    assert millicores(uploader["resources"]["requests"]["cpu"]) * 8 <= millicores(
        requests["cpu"])
    assert "cpu" not in uploader["resources"].get("limits", {}), (
        "a CPU limit would throttle hashing even on idle cores")
