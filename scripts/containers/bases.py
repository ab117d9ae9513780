"""Stand-ins for the two base images, built locally under the exact tags the Dockerfiles name.

No image registry is reachable here, so `python:3.11-slim` and the CUDA PyTorch image cannot be
pulled. In their place:

* the Python base: Debian bookworm (`debootstrap --variant=minbase`, whose Python is 3.11 like
  `python:3.11-slim`) with python3, venv and pip, imported as an image; a thin layer on top
  adds the host's CA bundle and pip configuration, so that pip inside a build reaches the same
  package registry the host's pip does (its local-path settings dropped: they do not exist in a
  container);
* the PyTorch base: that Python base plus a venv at /opt/conda (where the real image keeps its
  Python, first on PATH) holding the CPU torch wheel the host's pip already has, installed
  offline from a bind mount so the wheel itself is in no layer.

The debootstrap tarball and the wheels are cached under the cache dir; the stand-in images live
in the engine's data root and are rebuilt only when their inputs change (an image label holds
the inputs' hash).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.containers.engine import CommandFailed, Engine, log, run, unmount_under

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
MIRROR = os.environ.get("CKPT_CONTAINERS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Left out of the tarball: nothing in a build reads them.
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
        "var/lib/apt/lists", "var/cache/apt/archives")
RECIPE = 1  # bump when the rootfs recipe changes
ROOTFS_REPO = "ckpt-standin/bookworm-python"
KEY_LABEL = "ckpt-containers.standin-key"
STANDIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TORCH_VENV = "/opt/conda"


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def base_image(dockerfile: Path) -> str:
    """The image the Dockerfile's first FROM names."""
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", line, re.IGNORECASE)
        if match:
            return match.group(1)
    raise ValueError(f"{dockerfile}: no FROM")


def _image_key(engine: Engine, tag: str) -> str | None:
    result = engine.docker("image", "inspect", "--format",
                           f'{{{{index .Config.Labels "{KEY_LABEL}"}}}}', tag, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def _image_id(engine: Engine, tag: str) -> str:
    return engine.docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


# ---- the Debian rootfs ---------------------------------------------------------------------

def rootfs_tarball(cache: Path) -> Path:
    """Debian bookworm minbase with Python 3.11, as a tarball (debootstrap'ed once, cached)."""
    key = _key(SUITE, PACKAGES, MIRROR, TRIM, RECIPE)
    tarball = cache / "rootfs" / f"{SUITE}-python-{key}.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=tarball.parent))
    target = work / "root"
    log(f"debootstrap {SUITE} ({', '.join(PACKAGES)}) from {MIRROR}; a few minutes, once")
    try:
        run(["nice", "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             SUITE, target, MIRROR], timeout=1500)
        unmount_under(target)
        for rel in TRIM:
            for child in (target / rel).glob("*"):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        partial = tarball.with_suffix(".partial")
        run(["tar", "--numeric-owner", "-C", target, "-cf", partial, "."], timeout=600)
        partial.replace(tarball)
    finally:
        unmount_under(work)
        run(["rm", "-rf", "--one-file-system", work], check=False, timeout=600)
    return tarball


def rootfs_image(engine: Engine, cache: Path) -> str:
    tarball = rootfs_tarball(cache)
    tag = f"{ROOTFS_REPO}:{tarball.stem.rsplit('-', 1)[1]}"
    if _image_key(engine, tag) is None:
        log(f"importing {tarball.name} as {tag}")
        engine.docker("import", "--change", f"ENV PATH={STANDIN_PATH}", "--change",
                      "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', tarball, tag)
    return tag


# ---- the host's pip configuration ------------------------------------------------------------

def _pip_config_items() -> list[tuple[str, str, str]]:
    """(section, key, value) of the host's effective pip configuration, env overriding files."""
    out = run([sys.executable, "-m", "pip", "config", "list"]).stdout
    items: dict[tuple[str, str], str] = {}
    env_items: dict[str, str] = {}
    for line in out.splitlines():
        match = re.match(r"(?P<where>[^=]+?)\.(?P<key>[A-Za-z0-9_-]+)='(?P<value>.*)'$", line)
        if not match:
            continue
        where, key, value = match["where"], match["key"], match["value"]
        if where == ":env:":
            env_items[key] = value
        else:
            items[(where, key)] = value
    for key, value in env_items.items():
        items[("global", key)] = value
    return [(section, key, value) for (section, key), value in sorted(items.items())]


def _in_container(value: str) -> bool:
    """Whether a location pip may be given still means something inside a container."""
    return re.match(r"https?://", value) is not None


def host_pip_files(dest: Path) -> list[str]:
    """Write etc/pip.conf (and the files it names) under `dest`; returns notes for the log."""
    notes: list[str] = []
    lines: dict[str, list[str]] = {}
    files: dict[str, Path] = {}
    for section, key, value in _pip_config_items():
        if key in ("cert", "client-cert"):
            if not Path(value).is_file():
                notes.append(f"{key}: {value} does not exist, left out")
                continue
            inside = "/etc/ssl/certs/ca-certificates.crt" if key == "cert" else "/etc/pip/client.pem"
            files[inside] = Path(value)
            value = inside
        elif key in ("constraint", "requirement"):
            kept = []
            for i, path in enumerate(value.split()):
                if Path(path).is_file():
                    inside = f"/etc/pip/{key}-{i}.txt"
                    files[inside] = Path(path)
                    kept.append(inside)
            value = " ".join(kept)
        elif key in ("find-links", "index-url", "extra-index-url"):
            kept = [v for v in value.split() if _in_container(v)]
            dropped = [v for v in value.split() if not _in_container(v)]
            if dropped:
                notes.append(f"{key}: {' '.join(dropped)} left out (local to the host)")
            value = " ".join(kept)
        if value:
            lines.setdefault(section, []).append(f"{key} = {value}")
    text = "".join(f"[{section}]\n" + "".join(f"{line}\n" for line in entries)
                   for section, entries in lines.items())
    (dest / "etc").mkdir(parents=True, exist_ok=True)
    (dest / "etc" / "pip.conf").write_text(text)
    for inside, source in files.items():
        target = dest / inside.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    notes.insert(0, "pip.conf in the stand-in: " + "; ".join(
        line for entries in lines.values() for line in entries))
    return notes


def python_standin(engine: Engine, cache: Path, tag: str, work: Path) -> str:
    """`tag` (python:3.11-slim): the Debian rootfs plus the host's CA bundle and pip config."""
    rootfs = rootfs_image(engine, cache)
    context = work / "python-standin"
    if context.exists():
        shutil.rmtree(context)
    files = context / "files"
    files.mkdir(parents=True)
    for note in host_pip_files(files):
        log(note)
    shutil.copyfile(HERE / "standin" / "python.Dockerfile", context / "Dockerfile")
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes())
    key = _key(_image_id(engine, rootfs), digest.hexdigest())
    if _image_key(engine, tag) != key:
        log(f"building the stand-in {tag} (from {rootfs})")
        engine.docker("build", "--network", "none", "--build-arg", f"ROOTFS={rootfs}",
                      "--label", f"{KEY_LABEL}={key}", "-t", tag, context,
                      env={"DOCKER_BUILDKIT": "0"})
    return tag


# ---- the PyTorch base ------------------------------------------------------------------------

def torch_spec() -> str:
    """The torch the host's venv has (the Makefile's CPU wheel), or CKPT_CONTAINERS_TORCH."""
    spec = os.environ.get("CKPT_CONTAINERS_TORCH")
    if spec:
        return spec
    return "torch==" + importlib.metadata.version("torch").split("+")[0]


def torch_wheels(cache: Path, spec: str) -> Path:
    """The CPU torch wheel and its dependencies, as the host's pip finds them (cached)."""
    dest = cache / "wheels" / re.sub(r"[^A-Za-z0-9.=_-]", "_", spec)
    dest.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:",
         "-c", ROOT / "constraints.txt", spec, "-d", dest], timeout=1200)
    return dest


def torch_standin(engine: Engine, cache: Path, python_tag: str, tag: str) -> str:
    """`tag` (the CUDA PyTorch image): the Python stand-in plus the CPU torch in /opt/conda."""
    spec = torch_spec()
    wheels = torch_wheels(cache, spec)
    key = _key(_image_id(engine, python_tag), spec, sorted(p.name for p in wheels.glob("*.whl")))
    if _image_key(engine, tag) == key:
        return tag
    log(f"building the stand-in {tag} ({python_tag} + {spec}, CPU)")
    name = "ckpt-standin-torch-build"
    engine.docker("rm", "-f", name, check=False)
    script = (f"python -m venv {TORCH_VENV} && {TORCH_VENV}/bin/pip install -q --no-index "
              f"--find-links /wheels '{spec}' && mkdir -p /workspace")
    try:
        engine.docker("run", "--name", name, "--network", "none", "-v", f"{wheels}:/wheels:ro",
                      python_tag, "sh", "-c", script, timeout=1200)
        engine.docker("commit", "--change", f"ENV PATH={TORCH_VENV}/bin:{STANDIN_PATH}",
                      "--change", "WORKDIR /workspace", "--change", 'CMD ["python"]',
                      "--change", f"LABEL {KEY_LABEL}={key}", name, tag)
    finally:
        engine.docker("rm", "-f", name, check=False)
    return tag


def build_standins(engine: Engine, cache: Path, work: Path) -> dict[str, str]:
    """Both stand-ins, tagged as Dockerfile.uploader and Dockerfile.trainer name them."""
    python_tag = base_image(ROOT / "Dockerfile.uploader")
    torch_tag = base_image(ROOT / "Dockerfile.trainer")
    try:
        python_standin(engine, cache, python_tag, work)
        torch_standin(engine, cache, python_tag, torch_tag)
    except (CommandFailed, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"building the stand-in bases failed: {err}") from err
    return {"uploader": python_tag, "trainer": torch_tag}
