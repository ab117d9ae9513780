"""Model-card metadata check behind `POST /api/validate-yaml` (and README.md commits).

The YAML front matter is read by a small block-style YAML parser (mappings, sequences, quoted
and plain scalars, flow `[...]`/`{...}`, block scalars) so devhub stays stdlib-only. It rejects
what the Hub rejects: unparsable metadata, a `base_model` that is empty or not a Hub id, and a
`model-index` that is not a list of `{name, results: [{task: {type}, ...}]}`. A card without
metadata is accepted with the Hub's warning.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

FRONT_MATTER_RE = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")
_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"
HUB_ID_RE = re.compile(rf"^(?:{_PART}/)?{_PART}$")


NO_METADATA_WARNING = (
    "Empty or missing yaml metadata in repo card "
    "(https://huggingface.co/docs/hub/model-cards#model-card-metadata)"
)


class YamlError(ValueError):
    pass


@dataclass
class Validation:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "errors": [{"message": m} for m in self.errors],
            "warnings": [{"message": m} for m in self.warnings],
        }


def front_matter(content: str) -> str | None:
    match = FRONT_MATTER_RE.match(content)
    return match.group(2) if match else None


def validate_card(content: str) -> Validation:
    result = Validation()
    text = front_matter(content)
    if text is None:
        result.warnings.append(NO_METADATA_WARNING)
        return result
    try:
        metadata = parse_yaml(text)
    except YamlError as err:
        result.errors.append(f"Invalid YAML in README.md metadata: {err}")
        return result
    if not metadata:
        result.warnings.append(NO_METADATA_WARNING)
        return result
    if not isinstance(metadata, dict):
        result.errors.append("README.md metadata must be a YAML mapping")
        return result
    if "base_model" in metadata:
        result.errors.extend(_check_base_model(metadata["base_model"]))
    if "model-index" in metadata:
        result.errors.extend(_check_model_index(metadata["model-index"]))
    return result


def _check_model_index(value: Any) -> list[str]:
    """The shape the Hub's model-index schema demands (the part a card's evaluation needs)."""
    if not isinstance(value, list):
        return ['"model-index" must be an array']
    errors = []
    for i, model in enumerate(value):
        where = f'"model-index[{i}]"'
        if not isinstance(model, dict):
            errors.append(f"{where} must be an object")
            continue
        if not isinstance(model.get("name"), str) or not model["name"]:
            errors.append(f"{where}.name must be a non-empty string")
        results = model.get("results")
        if not isinstance(results, list):
            errors.append(f"{where}.results must be an array")
            continue
        for j, item in enumerate(results):
            task = item.get("task") if isinstance(item, dict) else None
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f"{where}.results[{j}].task.type must be a string")
    return errors


def _check_base_model(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values:
        return ['"base_model" must not be empty']
    errors = []
    for item in values:
        if item is None or item == "":
            errors.append('"base_model" must not be empty')
        elif not isinstance(item, str) or not _is_hub_id(item):
            errors.append(
                f'"base_model" with value {json.dumps(item)} is not valid. '
                "Use a model id from https://hf.co/models."
            )
    return errors


def _is_hub_id(value: str) -> bool:
    return bool(HUB_ID_RE.match(value)) and ".." not in value and "--" not in value


# ---- a small block-style YAML parser ----------------------------------------------------


@dataclass(frozen=True)
class _Line:
    number: int
    indent: int
    text: str  # without its comment; "" for a comment-only line
    raw: str  # as written (continuation lines of quoted and block scalars need it)


def parse_yaml(text: str) -> Any:
    """Parse a YAML document of the block style used in model cards."""
    lines = []
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not raw.strip() or raw.strip() in ("---", "..."):
            continue
        stripped = raw.lstrip(" ")
        if stripped[:1] == "\t":
            raise YamlError(f"line {number}: tabs are not allowed for indentation")
        indent = len(raw) - len(stripped)
        lines.append(_Line(number, indent, _strip_comments(stripped).strip(), stripped.strip()))
    parser = _BlockParser(lines)
    first = parser.peek()
    if first is None:
        return None
    value = parser.block(first.indent)
    if (line := parser.peek()) is not None:
        raise YamlError(f"line {line.number}: unexpected indentation")
    return value


def _opens_quote(text: str, i: int) -> bool:
    """A quote starts a quoted scalar only at a token start, not inside a word (`it's`)."""
    return text[i] in "'\"" and (i == 0 or text[i - 1] in " \n[{,:-?")


def _scan(text: str) -> tuple[list[tuple[int, str, int]], bool]:
    """(index, char, flow depth) of every character outside quoted scalars, and whether a
    quoted scalar is still open at the end of `text`."""
    out: list[tuple[int, str, int]] = []
    quote: str | None = None
    depth = 0
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if (quote == '"' and char == "\\") or (quote == "'" and text[i : i + 2] == "''"):
                i += 1
            elif char == quote:
                quote = None
        elif _opens_quote(text, i):
            quote = char
        else:
            depth += char in "[{"
            depth -= char in "]}"
            out.append((i, char, depth))
        i += 1
    return out, quote is not None


def _is_open(text: str) -> bool:
    """True while a flow collection or a quoted scalar begun in `text` is not closed yet."""
    chars, quote_open = _scan(text)
    return quote_open or (bool(chars) and chars[-1][2] > 0)


def _strip_comments(text: str) -> str:
    """Drop `# ...` up to each line end, except inside quoted scalars (which may span lines)."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if (quote == '"' and char == "\\") or (quote == "'" and text[i : i + 2] == "''"):
                out.append(text[i : i + 2])
                i += 2
                continue
            if char == quote:
                quote = None
        elif char == "#" and (i == 0 or text[i - 1] in " \t\n"):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif _opens_quote(text, i):
            quote = char
        out.append(char)
        i += 1
    return "".join(out)


def _split_key(text: str) -> tuple[str, str] | None:
    """`key: value` -> (key, value); None when the line is no mapping entry."""
    for i, char, depth in _scan(text)[0]:
        if char == ":" and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            key = text[:i].strip()
            if not key:
                return None
            return (_scalar(key) if key[:1] in "'\"" else key), text[i + 1 :].strip()
    return None


class _BlockParser:
    def __init__(self, lines: list[_Line]) -> None:
        self.lines = lines
        self.pos = 0

    def peek(self) -> _Line | None:
        """The next line with content (comment-only lines are skipped)."""
        while self.pos < len(self.lines) and not self.lines[self.pos].text:
            self.pos += 1
        return self.lines[self.pos] if self.pos < len(self.lines) else None

    def block(self, indent: int) -> Any:
        line = self.peek()
        assert line is not None
        if line.text == "-" or line.text.startswith("- "):
            return self.sequence(indent)
        if _split_key(line.text) is not None:
            return self.mapping(indent)
        self.pos += 1
        return self.scalar_lines(line.text, indent - 1)

    def sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while (
            (line := self.peek())
            and line.indent == indent
            and (line.text == "-" or line.text.startswith("- "))
        ):
            rest = line.text[1:].strip()
            if not rest:
                self.pos += 1
                items.append(self.nested(indent))
                continue
            # "- key: value" opens a mapping whose keys sit where `rest` starts.
            raw_rest = line.raw[1:].lstrip()
            column = indent + (len(line.raw) - len(raw_rest))
            self.lines[self.pos] = _Line(line.number, column, rest, raw_rest)
            items.append(self.block(column))
        return items

    def mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (line := self.peek()) and line.indent == indent:
            split = _split_key(line.text)
            if split is None:
                raise YamlError(f"line {line.number}: expected 'key: value'")
            key, rest = split
            self.pos += 1
            if not rest:
                out[str(key)] = self.nested(indent, allow_same_indent_sequence=True)
            elif rest[0] in "|>":
                out[str(key)] = self.block_scalar(indent, folded=rest[0] == ">")
            else:
                out[str(key)] = self.scalar_lines(rest, indent)
        if (line := self.peek()) and line.indent > indent:
            raise YamlError(f"line {line.number}: unexpected indentation")
        return out

    def nested(self, indent: int, allow_same_indent_sequence: bool = False) -> Any:
        line = self.peek()
        if line is None:
            return None
        if line.indent > indent:
            return self.block(line.indent)
        if allow_same_indent_sequence and line.indent == indent and line.text.startswith("-"):
            return self.sequence(indent)
        return None

    def scalar_lines(self, raw: str, indent: int) -> Any:
        """A scalar or flow value, with the more-indented lines that continue it."""
        if raw[:1] in "'\"[{":
            parts = [raw]
            while _is_open(_strip_comments("\n".join(parts))) and self.pos < len(self.lines):
                line = self.lines[self.pos]
                if line.indent <= indent:
                    break
                parts.append(line.raw)
                self.pos += 1
            return _scalar(_strip_comments("\n".join(parts)).replace("\n", " "))
        extra = []  # plain scalars fold their continuation lines with spaces
        while (line := self.peek()) and line.indent > indent and _split_key(line.text) is None:
            extra.append(line.text)
            self.pos += 1
        return " ".join([raw, *extra]) if extra else _scalar(raw)

    def block_scalar(self, indent: int, folded: bool) -> str:
        parts = []  # a block scalar's lines are content, `#` included
        while self.pos < len(self.lines) and self.lines[self.pos].indent > indent:
            parts.append(self.lines[self.pos].raw)
            self.pos += 1
        return (" " if folded else "\n").join(parts) + "\n"


_NULLS = ("", "~", "null", "Null", "NULL")
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT_RE = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_FLOAT_RE = re.compile(r"^[-+]?([0-9][0-9_]*\.[0-9_]*|\.[0-9_]+)([eE][-+][0-9]+)?$")


def _scalar(text: str) -> Any:
    text = text.strip()
    if text[:1] in "[{":
        value, end = _flow(text, 0)
        if text[end:].strip():
            raise YamlError(f"trailing text after {text[:end]!r}")
        return value
    if text[:1] in "'\"":
        value, end = _quoted(text, 0)
        if text[end:].strip():
            raise YamlError(f"trailing text after quoted string {text!r}")
        return value
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    if text[:1] in "&*!%@`|>":
        raise YamlError(f"unsupported YAML syntax in {text!r}")
    return text


def _quoted(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    i = start + 1
    out = []
    while i < len(text):
        char = text[i]
        if quote == "'" and char == "'":
            if text[i + 1 : i + 2] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        if quote == '"' and char == "\\":
            out.append(text[i : i + 2])
            i += 2
            continue
        if quote == '"' and char == '"':
            try:
                return json.loads('"' + "".join(out) + '"'), i + 1
            except ValueError as err:
                raise YamlError(f"bad escape in {text!r}") from err
        out.append(char)
        i += 1
    raise YamlError(f"unterminated string {text!r}")


def _flow(text: str, start: int) -> tuple[Any, int]:
    """Parse `[...]` or `{...}` starting at `start`; returns (value, end index)."""
    closing = "]" if text[start] == "[" else "}"
    items: list[Any] = []
    mapping: dict[str, Any] = {}
    i = start + 1
    while True:
        while i < len(text) and text[i] in " ,":
            i += 1
        if i >= len(text):
            raise YamlError(f"unterminated flow collection {text!r}")
        if text[i] == closing:
            return (items if closing == "]" else mapping), i + 1
        value, i = _flow_item(text, i, closing)
        if closing == "}":
            key = value
            while i < len(text) and text[i] == " ":
                i += 1
            if text[i : i + 1] != ":":
                raise YamlError(f"expected ':' in {text!r}")
            value, i = _flow_item(text, i + 1, closing)
            mapping[str(key)] = value
        else:
            items.append(value)


def _flow_item(text: str, i: int, closing: str) -> tuple[Any, int]:
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] in "[{":
        return _flow(text, i)
    if i < len(text) and text[i] in "'\"":
        return _quoted(text, i)
    end = i
    while end < len(text):
        char = text[end]
        if char in (",", closing):
            break
        if closing == "}" and char == ":" and text[end + 1 : end + 2] in (" ", "", ",", "}"):
            break
        end += 1
    return _scalar(text[i:end]), end
