"""Write a model folder so it is either complete or absent (DESIGN.md section 2).

The folder is built under a hidden staging name beside the target and renamed into place at the
end; a run killed at any point leaves at most a hidden `.<name>.partial-*` folder that no
setting points at and that has no valid sidecar until its last file is written.
"""

from __future__ import annotations

import os
import shutil
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
        if target.exists():
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
    """Flush file contents before the rename, so a power cut cannot publish empty files."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
