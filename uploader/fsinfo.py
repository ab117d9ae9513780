"""What filesystem a path lives on, and how much room it has.

SQLite's WAL mode needs shared memory between processes on one host, which network filesystems
do not give; `flock`/`lockf` are unreliable there too. The state store asks this module before it
opens anything, so a state dir on NFS fails at start with one clear line instead of corrupting
later.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PROC_MOUNTS = Path("/proc/mounts")

# Filesystem types (as /proc/mounts spells them) whose locking and mmap semantics SQLite WAL
# cannot rely on.
NETWORK_FS_TYPES: frozenset[str] = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "ncpfs",
        "9p",
        "ceph",
        "fuse.ceph",
        "fuse.cephfs",
        "glusterfs",
        "fuse.glusterfs",
        "lustre",
        "gpfs",
        "afs",
        "openafs",
        "beegfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.goofys",
        "fuse.rclone",
        "fuse.juicefs",
        "fuse.mountpoint-s3",
        "fuse.blobfuse",
        "fuse.blobfuse2",
        "virtiofs",
        "vboxsf",
        "fuse.vmhgfs-fuse",
        "davfs",
        "fuse.davfs2",
        "efs",
    }
)


def _unescape(field: str) -> str:
    r"""/proc/mounts escapes space, tab, newline and backslash as octal (`\040`)."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        chunk = field[i : i + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and chunk[1:].isdigit():
            out.append(chr(int(chunk[1:], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _existing_ancestor(path: Path) -> Path:
    """The real path of `path` or of its nearest existing ancestor (a state dir may not exist yet)."""
    candidate = Path(os.path.abspath(path))
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return Path(os.path.realpath(candidate))


def filesystem_type(path: Path, *, mounts: Path = PROC_MOUNTS) -> str | None:
    """The filesystem type of `path`: the longest mount point that contains it wins.

    None when the mount table cannot be read (not Linux, or /proc hidden): callers then proceed
    as on a local filesystem rather than refuse to start.
    """
    target = _existing_ancestor(path)
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = Path(_unescape(fields[1]))
        if target != mount_point and mount_point not in target.parents:
            continue
        depth = len(mount_point.parts)
        # `>=`: a later line with the same mount point is a mount stacked over the earlier one.
        if best is None or depth >= best[0]:
            best = (depth, fields[2])
    return best[1] if best else None


def is_network_filesystem(path: Path, *, mounts: Path = PROC_MOUNTS) -> str | None:
    """The filesystem type when `path` is on a network filesystem, else None."""
    fstype = filesystem_type(path, mounts=mounts)
    if fstype is None:
        return None
    if fstype in NETWORK_FS_TYPES or fstype.startswith(("nfs", "smb", "cifs")):
        return fstype
    return None


def free_bytes(path: Path) -> int:
    """Bytes available to this (unprivileged) user on the filesystem holding `path`."""
    return shutil.disk_usage(_existing_ancestor(path)).free
