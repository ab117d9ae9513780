import os
from datetime import UTC, datetime

import pytest
from huggingface_hub.utils import validate_repo_id
from hypothesis import given
from hypothesis import strategies as st

from shared.layout import Kind
from shared.markers import build_marker
from shared.naming import (
    DEFAULT_PREFIX,
    RepoNameError,
    folder_timestamp,
    make_repo_name,
    parse_repo_id,
    validate_prefix,
)

WHEN = datetime(2025, 11, 4, 14, 30, 22, tzinfo=UTC)


def test_seed_examples():
    name = make_repo_name("albyos", DEFAULT_PREFIX, Kind.CHECKPOINT, 50, WHEN)
    assert name.repo_id == "albyos/llama3-medical-ner-checkpoint-50-20251104_143022"
    final = make_repo_name("albyos", DEFAULT_PREFIX, Kind.FINAL, 450,
                           datetime(2025, 11, 4, 16, 12, 45, tzinfo=UTC))
    assert final.repo_id == "albyos/llama3-medical-ner-lora-final-20251104_161245"


def test_timestamp_is_utc():
    from datetime import timedelta, timezone

    local = WHEN.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert make_repo_name("u", "p", Kind.CHECKPOINT, 1, local).name.endswith("20251104_143022")


@pytest.mark.parametrize(
    "prefix", ["", "-x", "x-", "a b", "a/b", "a--b", "a..b", "é", "x" * 70, "x.git", ".x"]
)
def test_bad_prefixes_rejected_with_reason(prefix):
    with pytest.raises(RepoNameError) as info:
        validate_prefix(prefix)
    assert "repo prefix" in str(info.value)


@pytest.mark.parametrize("repo_id", ["noslash", "u/other-model", "u/p-checkpoint-x-20251104_143022",
                                     "u/p-checkpoint-5-20251304_143022", "u/p-lora-final-2025"])
def test_parse_rejects_foreign_ids(repo_id):
    with pytest.raises(RepoNameError):
        parse_repo_id(repo_id)


part = st.from_regex(r"[A-Za-z0-9_](?:[A-Za-z0-9_]|[.-](?=[A-Za-z0-9_])){0,30}", fullmatch=True)
stamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                      timezones=st.just(UTC))


@given(namespace=part, prefix=part, kind=st.sampled_from(list(Kind)),
       step=st.integers(0, 10**9 - 1), when=stamps)
def test_round_trip(namespace, prefix, kind, step, when):
    name = make_repo_name(namespace, prefix, kind, step, when)
    # Whatever we make, the real client accepts.
    validate_repo_id(name.repo_id)
    parsed = parse_repo_id(name.repo_id)
    assert parsed == name
    assert parsed.timestamp == when.replace(microsecond=0)
    assert parsed.step == (step if kind is Kind.CHECKPOINT else None)


@given(st.text(max_size=40))
def test_validation_agrees_with_client(text):
    ok = True
    try:
        make_repo_name("user", text, Kind.FINAL, None, WHEN)
    except RepoNameError:
        ok = False
    # Our rules may be stricter than the client's (ASCII only), never looser: whatever we
    # accept, the client accepts too.
    if ok:
        validate_repo_id(f"user/{text}-lora-final-20251104_143022")


def test_timestamp_recomputable_from_folder(tmp_path):
    folder = tmp_path / "checkpoint-50"
    folder.mkdir()
    (folder / "trainer_state.json").write_text("{}")
    os.utime(folder / "trainer_state.json", (WHEN.timestamp(), WHEN.timestamp()))
    assert folder_timestamp(folder, None) == WHEN
    marker = build_marker(tmp_path, "checkpoint-50", run_id="r", step=50,
                          now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert folder_timestamp(folder, marker) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    # A hard link (staging) keeps the mtime, so the id is the same from the staged copy.
    staged = tmp_path / "staged"
    staged.mkdir()
    os.link(folder / "trainer_state.json", staged / "trainer_state.json")
    assert folder_timestamp(staged, None) == WHEN
