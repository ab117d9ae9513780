"""Static readers for the deployment files: Dockerfiles, docker-compose.yml, .dockerignore.

No Docker engine is needed: the tests check the files' invariants with these small parsers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = {"uploader": ROOT / "Dockerfile.uploader", "trainer": ROOT / "Dockerfile.trainer"}
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"

# `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}` (compose syntax).
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "RUN"
    args: str  # continuation lines joined with a space
    line: int  # 1-based line of the instruction's first line


def dockerfile(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, with `\\` continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        # Docker drops comment lines, also inside a continued instruction.
        if not stripped or stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        continued = stripped.endswith("\\")
        buffer.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            keyword, _, args = " ".join(buffer).partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip(), start))
            buffer = []
    assert not buffer, f"{path.name}: the last instruction ends with a continuation"
    return instructions


def only(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for inst in only(instructions, "ARG"):
        name, _, value = inst.args.partition("=")
        defaults[name.strip()] = value.strip()
    return defaults


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD; fails on the shell form."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def copy_sources(instructions: list[Instruction]) -> list[tuple[str, str]]:
    """(source, destination) of every COPY from the build context (flags like --chown skipped)."""
    pairs = []
    for inst in only(instructions, "COPY"):
        parts = [p for p in inst.args.split() if not p.startswith("--")]
        assert not any(p.startswith("--from") for p in inst.args.split()), "multi-stage COPY"
        *sources, dest = parts
        pairs += [(source, dest) for source in sources]
    return pairs


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping; None marks a pass-through (`KEY` without value)."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) for item in env]
        return {p[0]: (p[1] if len(p) == 2 else None) for p in pairs}
    return {key: (None if value is None else str(value)) for key, value in env.items()}


def interpolations(text: str) -> list[tuple[str, str | None, str | None]]:
    """(name, operator, argument) of every `${...}` in text ($$ is a literal dollar)."""
    text = text.replace("$$", "")
    return [(m["name"], m["op"], m["arg"]) for m in _INTERPOLATION.finditer(text)]


def resolve(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's interpolation of `value` given `env` (default: nothing set, as on a fresh host)."""
    env = env or {}

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise KeyError(f"{name} is required: {arg}")
        return current or ""

    return _INTERPOLATION.sub(substitute, value).replace("$$", "$")


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes (short `src:dst[:mode]` or long syntax)."""
    result = {}
    for volume in svc.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        result[target] = source
    return result


def duration_seconds(value: str) -> float:
    """A compose duration (`40s`, `1m30s`, `1h`, `500ms`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(value))
    assert parts and "".join(n + u for n, u in parts) == str(value), f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    # Go's filepath.Match as Docker uses it: `*` and `?` stop at `/`, `**` crosses directories.
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(path: str, patterns: list[str] | None = None) -> bool:
    """Whether .dockerignore keeps `path` (relative, `/`-separated) out of the build context.

    Docker's rule: the last pattern matching the path or one of its parent dirs wins; `!` negates.
    """
    if patterns is None:
        patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                    if line.strip() and not line.strip().startswith("#")]
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded
