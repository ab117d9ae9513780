import shutil

import pytest

from uploader import fsinfo

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
server:/export {root}/nfs nfs4 rw,vers=4.2 0 0
//host/share {root}/smb cifs rw 0 0
/dev/vdb {root}/nfs/local ext4 rw 0 0
sshfs#me@host: {root}/with\\040space fuse.sshfs rw 0 0
tmpfs {root}/stacked tmpfs rw 0 0
server:/other {root}/stacked nfs rw 0 0
"""


@pytest.fixture
def mounts(tmp_path):
    """A mount table whose mount points exist under tmp_path (mount points always exist)."""
    for mount_point in ("nfs/local", "nfsx", "smb", "with space", "stacked"):
        (tmp_path / mount_point).mkdir(parents=True)
    path = tmp_path / "mounts"
    path.write_text(MOUNTS.format(root=tmp_path))
    return path


@pytest.mark.parametrize(
    ("path", "fstype", "network"),
    [
        ("", "ext4", None),
        ("home/user/out", "ext4", None),
        ("nfs", "nfs4", "nfs4"),
        ("nfs/run/.uploader", "nfs4", "nfs4"),
        ("nfs/local/state", "ext4", None),  # the longest mount point wins
        ("nfsx/state", "ext4", None),  # a prefix of the name is not a parent
        ("smb/state", "cifs", "cifs"),
        ("with space/state", "fuse.sshfs", "fuse.sshfs"),  # octal escapes decoded
        ("stacked/x", "nfs", "nfs"),  # the later of two stacked mounts is visible
    ],
)
def test_type_from_mount_table(tmp_path, mounts, path, fstype, network):
    assert fsinfo.filesystem_type(tmp_path / path, mounts=mounts) == fstype
    assert fsinfo.is_network_filesystem(tmp_path / path, mounts=mounts) == network


def test_nearest_existing_ancestor_and_symlinks(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    table = tmp_path / "mounts"
    table.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/x {real} nfs rw 0 0\n")
    # Not created yet: judged by where it would be created, through the symlink.
    assert fsinfo.is_network_filesystem(link / "a" / "b", mounts=table) == "nfs"
    assert fsinfo.is_network_filesystem(tmp_path / "elsewhere", mounts=table) is None


def test_unreadable_mount_table_means_unknown(tmp_path):
    assert fsinfo.filesystem_type(tmp_path, mounts=tmp_path / "missing") is None
    assert fsinfo.is_network_filesystem(tmp_path, mounts=tmp_path / "missing") is None


def test_real_mount_table_knows_tmp_path(tmp_path):
    assert fsinfo.filesystem_type(tmp_path) is not None


def test_free_bytes(tmp_path):
    assert fsinfo.free_bytes(tmp_path / "not" / "yet") == shutil.disk_usage(tmp_path).free


def test_known_network_types():
    for name in ("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "ceph", "glusterfs",
                 "lustre", "gpfs", "afs", "fuse.s3fs", "fuse.gcsfuse"):
        assert name in fsinfo.NETWORK_FS_TYPES
