"""The upload path that sends one file while hashing the next, against devhub (issue 15):
Xet reads each large byte once (hf_xet's read gives its sha256), LFS hashes each file once and
starts sending before the last file is hashed, and the commit sends nothing twice."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd

from shared.hashing import LFS_ONLY_SIZE
from shared.layout import list_folders
from uploader import pipeline as pipeline_module
from uploader.hub import HubClient
from uploader.state import State

from .conftest import HubClientFactory
from .test_pipeline_integrity import build, one_checkpoint_of

LARGE = LFS_ONLY_SIZE + 1024 * 1024
OVERLAP_DEADLINE_S = 20.0


class EventLog(HubClient):
    """The real client, recording when bytes are handed to the library."""

    events: list[tuple[str, str]]
    batches: list[list[str]]
    sent: dict[str, threading.Event]

    def preupload(self, repo_id: str, operations: Sequence[CommitOperationAdd],
                  use_xet: bool, total: int = 0) -> None:
        self.events.extend(("send", op.path_in_repo) for op in operations)
        self.batches.append([op.path_in_repo for op in operations])
        for op in operations:
            self.sent.setdefault(op.path_in_repo, threading.Event()).set()
        super().preupload(repo_id, operations, use_xet, total)


@pytest.mark.parametrize("use_xet", [True, False], ids=["xet", "lfs"])
def test_each_file_is_hashed_once_and_sent_while_others_are_hashed(
        tmp_path: Path, make_hub_client: HubClientFactory, request, monkeypatch,
        use_xet: bool) -> None:
    out = tmp_path / "out"
    one_checkpoint_of(out, adapter_bytes=LARGE, optimizer_bytes=2 * LARGE)
    base = make_hub_client()
    hub = EventLog(replace(base.config, use_xet=use_xet, xet_fallback=False), base.policy)
    hub.events, hub.batches, hub.sent = [], [], {}
    hashed = pipeline_module.digest_file
    overlapped: list[bool] = []

    def recording_digest(path: Path, *args: object, **kwargs: object):
        name = Path(path).name
        if name == "adapter_model.safetensors":
            # The largest file, the upload's long pole, is hashed and sent first; the next one
            # is hashed while it is on its way (an upload that hashes everything first would
            # wait here in vain).
            overlapped.append(hub.sent.setdefault("optimizer.pt", threading.Event())
                              .wait(OVERLAP_DEADLINE_S))
        hub.events.append(("hash", name))
        return hashed(path, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "digest_file", recording_digest)
    pipeline = build(out, hub, request)
    (ref,) = [r for r in list_folders(out) if r.name == "checkpoint-50"]
    pipeline.observe(ref)
    (record,) = pipeline.records()
    done = pipeline.upload(record)
    assert done.state is State.VERIFIED, done

    hashes = [name for what, name in hub.events if what == "hash"]
    sends = [name for what, name in hub.events if what == "send"]
    large = {"adapter_model.safetensors", "optimizer.pt"}
    assert len(hashes) == len(set(hashes)), "a file was hashed twice"
    assert large <= set(sends) and len(sends) == len(set(sends)), sends
    if use_xet:
        # One read per large byte: hf_xet's; ours never touches them. Every file is handed
        # over in one go (our hashes of the small files, for their git sha1, run meanwhile).
        assert not large & set(hashes), hashes
        assert len(hub.batches) == 1 and set(hub.batches[0]) == set(sends), hub.batches
    else:
        # The LFS batch needs each sha256 first, so each file is sent after its hash: the
        # small files first, then the large ones largest first, the next hashed meanwhile.
        for name in sends:
            assert hub.events.index(("hash", name)) < hub.events.index(("send", name))
        assert [n for n in sends if n in large] == ["optimizer.pt", "adapter_model.safetensors"]
        assert set(sends[:-2]).isdisjoint(large), sends
        assert overlapped == [True], "the second large file was hashed before the first was sent"
    # What the Hub lists was verified against the digests kept for later checks.
    expected = {f.path_in_repo: f for f in pipeline.expected_files(done) or []}
    assert expected["optimizer.pt"].digest.size == 2 * LARGE
