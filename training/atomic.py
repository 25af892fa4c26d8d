"""Write a model folder so it is either complete or absent (docs/design.md section 2).

The folder is built under a hidden staging name beside the target and renamed into place at the
end; a run killed at any point leaves at most a hidden `.<name>.partial-*` folder that no
setting points at and that has no valid sidecar until its last file is written.

Replacing an existing folder is one atomic exchange of the two names where the OS offers it (Linux
renameat2 RENAME_EXCHANGE), so the target path always holds a complete folder, the old or the new;
elsewhere it is two renames, and a kill between them leaves the old folder as `.<name>.old-*`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def staging_path(target: Path) -> Path:
    return target.parent / f".{target.name}.partial-{os.getpid()}-{int(time.time())}"


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `target`, on failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(target)
    staging.mkdir()
    try:
        yield staging
        _fsync_tree(staging)
        if target.exists() and _exchange(staging, target):
            shutil.rmtree(staging, ignore_errors=True)  # staging now holds the previous folder
        elif target.exists():
            retired = target.parent / f".{target.name}.old-{os.getpid()}-{int(time.time())}"
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    """Flush file contents before the rename, so a power cut cannot publish empty files.

    Every file also gets the ordinary 0644: safetensors writes weights as 0600, and a service running
    as another user (the container's `saring` user reading a mounted models folder) could then not
    read the weights it is told to serve.
    """
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
            with path.open("rb") as fh:
                os.fsync(fh.fileno())


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2); False where the OS or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no libc symbol (old glibc, musl without it)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False  # file system without RENAME_EXCHANGE (or a seccomp filter): use two renames
    raise OSError(err, os.strerror(err), str(b))
