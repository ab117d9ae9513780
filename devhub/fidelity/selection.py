"""Which of huggingface_hub's tests devhub claims, and the ones left out of scope, with why.

A run collects `SELECTION` (tests marked `production` skip: they need huggingface.co). A test
that fails and matches `OUT_OF_SCOPE` is reported as "known", not as a failure; devhub/README.md
lists the same reasons. Keys are node-id prefixes relative to the suite's `tests/` folder.
"""

from __future__ import annotations

# test_hf_api.py: the classes on repos, commits, uploads, tree, paths-info, commit listings,
# checksums, background commits and users (whoami); the rest of the module is about features
# devhub does not serve (discussions, Spaces, collections, inference, webhooks, ...).
HF_API_CLASSES = (
    "TestHfApiRepoFileExists",
    "TestHfApiEndpoints",
    "TestCommitApi",
    "TestHfApiUploadEmptyFile",
    "TestHfApiDeleteFolder",
    "TestHfApiListRepoTree",
    "TestHfApiDeleteFiles",
    "TestHfApiPrivate",
    "TestHfLargefiles",
    "TestCommitInBackground",
    "TestListGitCommits",
    "TestHfApiVerifyChecksums",
    "TestUserApi",
)

SELECTION: tuple[str, ...] = (
    *(f"test_hf_api.py::{name}" for name in HF_API_CLASSES),
    "test_file_download.py",
    "test_snapshot_download.py",
    "test_upload_pipeline.py",
)

# The fast subset `tests/devhub/test_fidelity.py` runs in `make test` (both modes): setup with
# the suite's own user, each gap once found (exists checks, stale parentCommit, ".." paths,
# .gitignore, case-insensitive ids, card metadata, folder deletes, lastCommit), tree, branches.
_COMMIT = "test_hf_api.py::TestCommitApi"
FAST: tuple[str, ...] = (
    "test_hf_api.py::TestHfApiRepoFileExists",
    "test_hf_api.py::TestHfApiDeleteFolder",
    "test_hf_api.py::TestHfApiListRepoTree",
    "test_hf_api.py::TestHfApiUploadEmptyFile",
    f"{_COMMIT}::test_create_commit_conflict",
    f"{_COMMIT}::test_create_file_with_relative_path",
    f"{_COMMIT}::test_upload_folder_gitignore_already_exists",
    f"{_COMMIT}::test_upload_folder_gitignore_in_commit",
    f"{_COMMIT}::test_create_commit_repo_id_case_insensitive",
    f"{_COMMIT}::test_commit_modelcard_invalid_metadata",
    f"{_COMMIT}::test_commit_modelcard_empty_metadata",
    f"{_COMMIT}::test_create_commit_repo_does_not_exist",
    f"{_COMMIT}::test_prevent_empty_commit_if_no_op",
    "test_snapshot_download.py::TestSnapshotDownload::test_download_model",
    "test_snapshot_download.py::TestResolveRevision",
)

PRS = "pull requests are not served (create_pr is refused; the uploader never opens one)"
MOVE = "moving (renaming) repos and the old name's redirect are not served"
GATED = "gated repos (and their access requests) are not served"
ENTERPRISE = "enterprise org settings (private repos by default) are not served"

OUT_OF_SCOPE: dict[str, str] = {
    "test_hf_api.py::TestHfApiEndpoints::test_move_repo_normal_usage": MOVE,
    "test_hf_api.py::TestHfApiEndpoints::test_move_repo_target_already_exists": MOVE,
    "test_file_download.py::TestStagingDownload::test_download_regular_file_from_private_renamed_repo": MOVE,
    "test_hf_api.py::TestHfApiEndpoints::test_update_repo_settings": GATED,
    "test_hf_api.py::TestHfApiEndpoints::test_update_dataset_repo_settings": GATED,
    "test_file_download.py::TestStagingDownload::test_download_from_a_gated_repo_with_hf_hub_download": GATED,
    "test_hf_api.py::TestCommitApi::test_create_repo_private_by_default": ENTERPRISE,
    "test_hf_api.py::TestCommitApi::test_upload_file_create_pr": PRS,
    "test_hf_api.py::TestCommitApi::test_upload_folder_create_pr": PRS,
    "test_hf_api.py::TestCommitApi::test_create_commit_create_pr": PRS,
    "test_hf_api.py::TestCommitApi::test_create_commit_create_pr_against_branch": PRS,
    "test_hf_api.py::TestCommitApi::test_create_commit_create_pr_on_foreign_repo": PRS,
    "test_hf_api.py::TestCommitApi::test_empty_commit_on_pr": PRS,
    # Its class fixture opens a PR, so every test of the class errors at setup.
    "test_hf_api.py::TestListGitCommits": PRS,
}


def out_of_scope_reason(nodeid: str) -> str | None:
    for prefix, reason in OUT_OF_SCOPE.items():
        if nodeid == prefix or nodeid.startswith(prefix + "::") or nodeid.startswith(prefix + "["):
            return reason
    return None
