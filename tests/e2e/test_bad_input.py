"""Bad configuration: exit 2 with one line naming the setting and the fix, never a traceback.

The CLI's `main()` runs in-process (the same code `python -m uploader` runs), so each case can
also fake what a test machine cannot have, like a state dir on NFS. An endpoint that is merely
unreachable is not bad input: `watch` waits for it and `backfill` exits 1 after its retries.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devhub.testing import DevHub
from tests.e2e.conftest import OTHER, READ_TOKEN, TOKEN, USER
from tests.support.processes import UploaderProcess, run_uploader, uploader_env

pytestmark = pytest.mark.e2e


def case(name, args, env=None, expect=None, setup=None):
    return pytest.param(args, env or {}, expect, setup, id=name)


def network_state_dir(monkeypatch, tmp_path):
    from uploader import fsinfo

    monkeypatch.setattr(fsinfo, "is_network_filesystem", lambda path, **kw: "nfs4")


def token_file_is_a_directory(monkeypatch, tmp_path):
    (tmp_path / "tokdir").mkdir()
    monkeypatch.setenv("HF_TOKEN_FILE", str(tmp_path / "tokdir"))


def empty_token_file(monkeypatch, tmp_path):
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("HF_TOKEN_FILE", str(tmp_path / "empty"))


def output_dir_is_a_file(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("not a folder")


CASES = [
    case("no-token", ["watch"], {"HF_TOKEN": None}, "HF_TOKEN"),
    # HF_TOKEN wins over the file, so these run without it.
    case("token-file-missing", ["watch"],
         {"HF_TOKEN": None, "HF_TOKEN_FILE": "/nonexistent/hf_token"}, "HF_TOKEN_FILE"),
    case("token-file-unreadable", ["watch"], {"HF_TOKEN": None}, "HF_TOKEN_FILE",
         token_file_is_a_directory),
    case("token-file-empty", ["watch"], {"HF_TOKEN": None}, "HF_TOKEN_FILE", empty_token_file),
    case("token-rejected-401", ["watch"], {"HF_TOKEN": "hf_wrong_token_for_devhub"}, "HF_TOKEN"),
    case("token-read-only", ["backfill"], {"HF_TOKEN": READ_TOKEN}, "HF_TOKEN"),
    case("namespace-not-writable", ["backfill"], {"HUB_NAMESPACE": OTHER}, "namespace"),
    case("endpoint-not-a-url", ["watch"], {"HF_ENDPOINT": "not a url"}, "HF_ENDPOINT"),
    case("endpoint-wrong-scheme", ["watch"], {"HF_ENDPOINT": "ftp://127.0.0.1"}, "HF_ENDPOINT"),
    case("endpoint-without-host", ["watch", "--endpoint", "http://"], {}, "--endpoint"),
    case("prefix-illegal-characters", ["watch", "--repo-prefix", "my prefix!"], {},
         "--repo-prefix"),
    case("prefix-too-long", ["watch"], {"HUB_REPO_PREFIX": "p" * 80}, "HUB_REPO_PREFIX"),
    case("namespace-illegal", ["watch"], {"HUB_NAMESPACE": "a/b"}, "HUB_NAMESPACE"),
    case("output-dir-a-file", ["watch", "--output-dir", "{tmp}/file"], {}, "output dir",
         output_dir_is_a_file),
    case("state-dir-on-network-fs", ["watch"], {}, "--state-dir", network_state_dir),
    case("negative-keep-last", ["watch", "--keep-last", "-1"], {}, "--keep-last"),
    case("zero-settle", ["watch", "--settle-seconds", "0"], {}, "--settle-seconds"),
    case("negative-settle-env", ["backfill"], {"UPLOADER_SETTLE_SECONDS": "-5"},
         "UPLOADER_SETTLE_SECONDS"),
    case("settle-not-a-number", ["watch", "--settle-seconds", "soon"], {}, "--settle-seconds"),
    case("zero-concurrency", ["watch", "--concurrency", "0"], {}, "--concurrency"),
    case("unknown-transfer", ["watch", "--transfer", "ftp"], {}, "--transfer"),
    case("unknown-option", ["watch", "--bogus-option"], {}, "--bogus-option"),
    case("unknown-command", ["upload-everything"], {}, "upload-everything"),
    case("option-of-another-command", ["status", "--prune"], {}, "--prune"),
]


@pytest.mark.parametrize("args, env, expect, setup", CASES)
def test_bad_configuration_exits_2_with_one_line(args, env, expect, setup, hub, tmp_path,
                                                 monkeypatch, capsys):
    from uploader.cli import main

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key, value in uploader_env(hub.url, TOKEN).items():
        monkeypatch.setenv(key, value)
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    if setup:
        setup(monkeypatch, tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--output-dir" not in argv and argv[0] in ("watch", "backfill"):
        argv += ["--output-dir", str(out)]
    with pytest.raises(SystemExit) if argv[0] == "upload-everything" or any(
            a.startswith("--bogus") or a == "--prune" for a in argv) else _no_raise() as info:
        code = main(argv)
    if info is not None and hasattr(info, "value"):
        code = info.value.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error:") and expect in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    for secret in (TOKEN, READ_TOKEN, "hf_wrong_token_for_devhub"):
        assert secret not in captured.err + captured.out


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_backfill_exits_1_after_retries(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = uploader_env(f"http://127.0.0.1:{free_port()}", TOKEN, UPLOADER_RETRY_ATTEMPTS="2")
    result = run_uploader(["backfill", "--output-dir", str(out)], env, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_endpoint_watch_waits_for_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    proc = UploaderProcess(["watch", "--output-dir", str(out)],
                           uploader_env(f"http://127.0.0.1:{port}", TOKEN),
                           tmp_path / "watch.log").start()
    try:
        proc.wait_output("not reachable yet", 60)
        assert proc.running()
        with DevHub(tmp_path / "hub", users={USER: TOKEN}, port=port):
            proc.wait_output("watching", 90)
            assert proc.running()
    finally:
        proc.stop()
    assert "Traceback" not in Path(proc.log_path).read_text()
