"""validate-yaml and README.md commits: metadata the Hub rejects is rejected."""

import contextlib
import json
from pathlib import Path

import httpx
import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import BadRequestError
from hypothesis import given, settings
from hypothesis import strategies as st

from devhub.testing import DevHub
from devhub.yaml_check import YamlError, parse_yaml, validate_card

from .conftest import USERS, write_files

BAD_CARDS = {
    "local path": "---\nbase_model: /local/path/to/model\nlibrary_name: peft\n---\n# Model\n",
    "empty": "---\nbase_model:\nlibrary_name: peft\n---\n",
    "empty string": "---\nbase_model: ''\n---\n",
    "relative path": "---\nbase_model: ./outputs/checkpoint-10\n---\n",
    "list with a path": "---\nbase_model:\n- org/name\n- /abs/path\n---\n",
    "broken yaml": "---\ntags: [unclosed\n---\n",
}
GOOD_CARDS = {
    "hub id": "---\nbase_model: meta-llama/Meta-Llama-3-8B-Instruct\nlibrary_name: peft\n---\n# Hi\n",
    "org/name": "---\nbase_model: org/name\ntags:\n- lora\n---\n",
    "list": "---\nbase_model: [org/name, gpt2]\n---\n",
    "no metadata": "# Just a title\n",
}


@pytest.mark.parametrize("card", list(BAD_CARDS.values()), ids=list(BAD_CARDS))
def test_upload_folder_rejects_bad_metadata(
    alice: HfApi, repo_id: str, tmp_path: Path, card: str
) -> None:
    alice.create_repo(repo_id)
    folder = write_files(tmp_path / "f", {"README.md": card.encode(), "a.txt": b"a"})
    with pytest.raises(ValueError, match=r"Invalid metadata in README\.md") as err:
        alice.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="card")
    assert isinstance(err.value.__cause__, BadRequestError)
    assert alice.list_repo_files(repo_id) == [".gitattributes"]


@pytest.mark.parametrize("card", list(GOOD_CARDS.values()), ids=list(GOOD_CARDS))
def test_upload_accepts_good_metadata(alice: HfApi, repo_id: str, card: str) -> None:
    alice.create_repo(repo_id)
    # A card without metadata is accepted with the Hub's warning, which the client re-raises.
    expect = (
        pytest.warns(UserWarning, match="Empty or missing yaml metadata")
        if not card.startswith("---")
        else contextlib.nullcontext()
    )
    with expect:
        alice.create_commit(
            repo_id, [CommitOperationAdd("README.md", card.encode())], commit_message="card"
        )
    assert "README.md" in alice.list_repo_files(repo_id)


def test_validate_yaml_always_answers_json(hub: DevHub) -> None:
    ok = httpx.post(
        f"{hub.url}/api/validate-yaml", json={"content": GOOD_CARDS["hub id"], "repoType": "model"}
    )
    assert ok.status_code == 200 and ok.json() == {"errors": [], "warnings": []}
    bad = httpx.post(
        f"{hub.url}/api/validate-yaml",
        json={"content": BAD_CARDS["local path"], "repoType": "model"},
    )
    assert bad.status_code == 400
    assert "base_model" in bad.json()["errors"][0]["message"]


def test_commit_endpoint_checks_readme_too(hub: DevHub, alice: HfApi, repo_id: str) -> None:
    """A client that skips validate-yaml still cannot commit bad metadata."""
    import base64

    alice.create_repo(repo_id)
    lines = [
        {"key": "header", "value": {"summary": "card"}},
        {
            "key": "file",
            "value": {
                "path": "README.md",
                "encoding": "base64",
                "content": base64.b64encode(BAD_CARDS["empty"].encode()).decode(),
            },
        },
    ]
    response = httpx.post(
        f"{hub.url}/api/models/{repo_id}/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={
            "authorization": f"Bearer {USERS['alice']}",
            "content-type": "application/x-ndjson",
        },
    )
    assert response.status_code == 400


def test_card_checks() -> None:
    assert all(validate_card(card).errors for card in BAD_CARDS.values())
    assert not any(validate_card(card).errors for card in GOOD_CARDS.values())


MODEL_CARD = """
base_model: meta-llama/Meta-Llama-3-8B-Instruct
library_name: peft   # comment
license: apache-2.0
tags:
- trl
- "sft"
datasets: [org/data, 'other']
model-index:
- name: my-model
  results: []
widget:
  - text: "Hello: world # not a comment"
    example_title: x
nested: {a: 1, b: [true, null, 2.5]}
description: >
  folded
  text
# a comment line
notes: |
  keeps # this
  and this
wrapped: [one, # a comment inside a flow
  two]
quoted: 'spans
  # two lines'
empty:
"""


def test_parser_matches_pyyaml_on_a_model_card() -> None:
    assert parse_yaml(MODEL_CARD) == yaml.safe_load(MODEL_CARD)


@pytest.mark.parametrize("text", ["a: [1, 2", "a: 'open", "- a\nb: c", "a: b\n  c: d"])
def test_parser_rejects_invalid_yaml(text: str) -> None:
    with pytest.raises(YamlError):
        parse_yaml(text)


_keys = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_text = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N", "P", "S", "Zs"]), max_size=40
)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), _text)
_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(_keys, _documents, min_size=1, max_size=5),
    st.sampled_from([False, None, True]),
    st.sampled_from([20, 80, 10_000]),
)
def test_parser_agrees_with_pyyaml(document: dict, flow: bool | None, width: int) -> None:
    """PyYAML's output, block or flow style, wrapped or not, parses back to the same data."""
    text = yaml.safe_dump(document, default_flow_style=flow, width=width, sort_keys=False)
    assert parse_yaml(text) == document, text
