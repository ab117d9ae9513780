"""Fault injection: rules that make devhub misbehave on purpose, so clients can be tested.

Rules come from `--faults FILE.json` (a JSON list) and from the admin API
(`POST /_devhub/faults` with one rule or a list, `DELETE /_devhub/faults`, `GET /_devhub/faults`),
which needs `Authorization: Bearer <admin token>`. A request fires at most one rule: the first
live rule, in the order they were added, that matches it and passes its probability draw.
The admin endpoints themselves (`/_devhub/...`) are never faulted.

Rule schema (JSON object; only `action` is required):

    action          "status" | "reset" | "stall" | "delay" | "throttle" | "damage" | "ratelimit"
    method          HTTP method to match, or "*" (default)
    path            regex searched in the request path (query excluded); default: every path.
                    Anchor it (`^/api/whoami-v2$`) to match one endpoint exactly.
    user            match only requests whose token belongs to this user name
    times           fire on the first N matches only, then the rule is spent
    probability     0..1: fire on a match only when a draw from the rule's random.Random is below
    seed            the rule's random seed; default "<--seed>:<rule id>", so a campaign replays

  status:    status (int, default 503), message (str), retry_after (int -> `Retry-After`),
             ratelimit (int seconds -> `RateLimit: "api";r=0;t=<seconds>`). JSON body `{"error"}`.
  reset:     when "before_response" (default: the body is read, then the TCP connection is
             reset with SO_LINGER 0) or "mid_body" (reset after `after_bytes` bytes of the body,
             default half of its declared length).
  stall:     read the body, then never answer: hold the connection for `seconds` (default:
             until the server stops) and close it. Other requests and shutdown go on.
  delay:     sleep `seconds`, then answer normally.
  throttle:  read the request body and write the response at `bytes_per_second`.
  damage:    damage the stored copy of `file` (a path, or an fnmatch glob) in repo `repo`
             (`repo_type`, default "model") on the head of `branch` (default "main").
             mode "drop": the file disappears from the tree; "wrong_hash": tree, paths-info,
             siblings, preupload and download ETag report a wrong sha256 / oid for it, and
             tree / paths-info a wrong `xetHash` for a Xet file (its `X-Xet-Hash` on resolve
             stays right: it is the address hf_xet downloads from); "corrupt": bytes are flipped
             in what is stored (the LFS object, the regular blob, or one chunk of every term of
             a Xet file's xorbs), same sizes, no listing changes: only a content read-back
             notices. Corrupted objects are shared by every file and repo using that content.
             Without `path` the damage is applied at once when the rule is added.
             With `path`, it is applied when a matching request has been handled, before its
             answer goes out (so a matching commit request damages the commit it creates).
             Repair: "drop" and "wrong_hash" are repaired by committing the file again.
             "corrupt" leaves a "known damaged" marker next to the object, and sending the
             content again replaces it: the LFS batch endpoint no longer answers "already
             stored" for it, a regular file's blob is rewritten by the next commit holding it,
             and a xorb upload of a damaged xorb stores the new bytes (`was_inserted: true`);
             the Xet dedup query never offers chunks (it always answers 404). Note that hf_xet
             skips uploading xorbs its local shard cache (`HF_XET_CACHE`, by default under
             `HF_HOME/xet`) says the server has: a Xet re-upload only repairs from a client
             without that cache entry. The client also skips files whose preupload oid is
             unchanged, so re-upload under a new path or after deleting the file.
  ratelimit: admit `limit` matching requests per fixed window of `window` seconds per user
             (`devhub.ratelimit`); the next ones get 429 with `Retry-After` and
             `RateLimit: "<resource>";r=0;t=<seconds left in the window>`. `resource` names the
             limit (default "api"), `message` replaces the Hub-like text. A request it admits
             goes on to the next rules; `times` bounds the 429s; `probability` is refused.

Storage (Xet) requests go through the same rules. They live under `devhub.xet.STORAGE_PREFIX`
("/_xet/<nonce>", the casUrl); path regexes that target them:

    "/xet-write-token/", "/xet-read-token/"     Hub-side token endpoints (Hub token)
    "/v1/chunks/"                              dedup query (always 404)
    "/v1/xorb-grants/"                         grant request (404: the client falls back)
    "/v1/xorbs/"                               xorb upload (POST, body = the xorb)
    "/v2/shards"  then "/v1/shards"            shard upload (v2 is a 404, the client falls back)
    "/v2/reconstructions/", "/v1/reconstructions/"   reconstruction query (v2 is a 404)
    "/fetch/"                                  signed xorb range reads (no Authorization)
    "/v1/telemetry"                            hf_xet's telemetry (accepted, dropped)

`user` matches a storage request by the user the Xet token was issued to. hf_xet retries
storage failures itself (`HF_XET_CLIENT_RETRY_MAX_ATTEMPTS`, `HF_XET_CLIENT_RETRY_BASE_DELAY`
default 3s, `HF_XET_CLIENT_RETRY_MAX_DURATION`, read when its session is created) and reports
what is left as a builtin `ConnectionError` carrying the status.

Every rule is listed with `id`, `matches` (requests that matched) and `hits` (times it fired).
The `--rate-limit` flag is the same windows on commits and repo creations, without a rule.
"""

from __future__ import annotations

import enum
import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from .ratelimit import FixedWindows, Quota


class Action(enum.StrEnum):
    STATUS = "status"
    RESET = "reset"
    STALL = "stall"
    DELAY = "delay"
    THROTTLE = "throttle"
    DAMAGE = "damage"
    RATELIMIT = "ratelimit"


RESET_WHEN = ("before_response", "mid_body")
DAMAGE_MODES = ("drop", "wrong_hash", "corrupt")
_FIELDS = {
    "action",
    "method",
    "path",
    "user",
    "times",
    "probability",
    "seed",
    "status",
    "message",
    "retry_after",
    "ratelimit",
    "when",
    "after_bytes",
    "seconds",
    "bytes_per_second",
    "repo",
    "repo_type",
    "file",
    "mode",
    "branch",
    "limit",
    "window",
    "resource",
    "id",
    "hits",
    "matches",
}


@dataclass
class FaultRule:
    action: Action
    method: str = "*"
    path: str | None = None
    user: str | None = None
    times: int | None = None
    probability: float | None = None
    seed: int | str | None = None
    status: int = 503
    message: str | None = None
    retry_after: int | None = None
    ratelimit: int | None = None
    when: str = "before_response"
    after_bytes: int | None = None
    seconds: float | None = None
    bytes_per_second: int | None = None
    repo: str | None = None
    repo_type: str = "model"
    file: str | None = None
    mode: str = "drop"
    branch: str = "main"
    limit: int | None = None
    window: float | None = None
    resource: str | None = None  # ratelimit: the RateLimit header's resource, "api" if unset
    id: int = 0
    hits: int = 0
    matches: int = 0
    _pattern: re.Pattern[str] | None = field(default=None, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _windows: FixedWindows | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, raw: Any) -> FaultRule:
        if not isinstance(raw, dict):
            raise ValueError(f"a fault rule must be a JSON object, got {raw!r}")
        unknown = set(raw) - _FIELDS
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        kwargs = {k: v for k, v in raw.items() if k not in ("id", "hits", "matches")}
        try:
            kwargs["action"] = Action(raw.get("action"))
        except ValueError as err:
            raise ValueError(f"unknown fault action {raw.get('action')!r}") from err
        rule = cls(**kwargs)
        rule.method = rule.method.upper()
        rule._validate()
        return rule

    def _validate(self) -> None:
        if self.path is not None:
            try:
                self._pattern = re.compile(self.path)
            except re.error as err:
                raise ValueError(f"bad path regex {self.path!r}: {err}") from err
        if self.probability is not None and not 0 <= self.probability <= 1:
            raise ValueError("probability must be within 0..1")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0")
        if self.action is Action.STATUS and not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if self.action is Action.RESET and self.when not in RESET_WHEN:
            raise ValueError(f"reset 'when' must be one of {RESET_WHEN}")
        if self.action is Action.DELAY and self.seconds is None:
            raise ValueError("delay needs 'seconds'")
        if self.action is Action.THROTTLE and not self.bytes_per_second:
            raise ValueError("throttle needs 'bytes_per_second'")
        if self.action is Action.RATELIMIT:
            self._validate_ratelimit()
        if self.action is Action.DAMAGE:
            if not self.repo or not self.file:
                raise ValueError("damage needs 'repo' and 'file'")
            if self.mode not in DAMAGE_MODES:
                raise ValueError(f"damage 'mode' must be one of {DAMAGE_MODES}")

    def _validate_ratelimit(self) -> None:
        if self.limit is None or self.window is None:
            raise ValueError("ratelimit needs 'limit' and 'window'")
        if self.probability is not None:
            raise ValueError("ratelimit decides by its window, not by 'probability'")
        if self.resource is not None and not re.fullmatch(r"\w+", self.resource):
            raise ValueError("ratelimit 'resource' must be a word (letters, digits, _)")
        self._windows = FixedWindows(Quota(self.limit, self.window))

    def admits(self, user: str | None) -> bool:
        """For a ratelimit rule: True when this request fits in its user's window (counted)."""
        assert self._windows is not None
        return self._windows.admit(user or "") is None

    def reset_in(self, user: str | None) -> float:
        assert self._windows is not None
        return self._windows.reset_in(user or "")

    @property
    def immediate(self) -> bool:
        """A damage rule without a request matcher is applied when it is added."""
        return self.action is Action.DAMAGE and self.path is None

    @property
    def spent(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches_request(self, method: str, path: str, user: str | None) -> bool:
        if self.method != "*" and self.method != method:
            return False
        if self.user is not None and self.user != user:
            return False
        return self._pattern is None or self._pattern.search(path) is not None

    def to_json(self) -> dict[str, Any]:
        return {
            k: (v.value if isinstance(v, Action) else v)
            for k, v in self.__dict__.items()
            if not k.startswith("_") and v is not None
        }


class FaultEngine:
    """The live rule list: thread-safe matching, hit counts, seeded draws."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rules: list[FaultRule] = []
        self._next_id = 1
        self._lock = threading.Lock()

    def parse(self, payload: Any) -> list[FaultRule]:
        """Validate one rule or a list of rules without adding them."""
        items = payload if isinstance(payload, list) else [payload]
        return [FaultRule.from_json(item) for item in items]

    def add(self, rules: list[FaultRule]) -> list[FaultRule]:
        with self._lock:
            for rule in rules:
                rule.id = self._next_id
                self._next_id += 1
                seed = rule.seed if rule.seed is not None else f"{self.seed}:{rule.id}"
                rule._rng = random.Random(seed)
                if rule.immediate:
                    rule.matches = rule.hits = 1
                    rule.times = 1
                self._rules.append(rule)
        return rules

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._next_id = 1

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_json() for rule in self._rules]

    def match(self, method: str, path: str, user: str | None) -> FaultRule | None:
        """The rule this request fires, if any (its counters are updated)."""
        with self._lock:
            for rule in self._rules:
                if rule.spent or rule.immediate or not rule.matches_request(method, path, user):
                    continue
                rule.matches += 1
                if rule.action is Action.RATELIMIT and rule.admits(user):
                    continue
                if rule.probability is not None and rule._rng.random() >= rule.probability:
                    continue
                rule.hits += 1
                return rule
        return None
