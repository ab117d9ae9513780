"""`.gitignore` matching for preupload's `shouldIgnore`, following git's documented rules.

Blank lines and `#` comments are skipped, `!` re-includes, a trailing `/` matches folders only,
a `/` at the start or in the middle anchors the pattern to the root, `*` and `?` stay within a
path segment, `**` spans segments. The last matching pattern wins, and a file under an ignored
folder stays ignored (git never looks inside an excluded folder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    negate: bool
    folder_only: bool


def parse(text: str) -> list[Rule]:
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        line = line[1:] if line.startswith("\\") and line[1:2] in ("#", "!") else line
        folder_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        rules.append(Rule(_compile(line.lstrip("/"), anchored), negate, folder_only))
    return rules


def _compile(pattern: str, anchored: bool) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out.append(f"[^{body[1:]}]" if body.startswith("!") else f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{''.join(out)}$")


def _verdict(rules: list[Rule], path: str, is_folder: bool) -> bool | None:
    verdict: bool | None = None
    for rule in rules:
        if rule.folder_only and not is_folder:
            continue
        if rule.regex.match(path):
            verdict = not rule.negate
    return verdict


def is_ignored(rules: list[Rule], path: str) -> bool:
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        if _verdict(rules, "/".join(parts[:depth]), is_folder=True):
            return True
    return bool(_verdict(rules, "/".join(parts), is_folder=False))
