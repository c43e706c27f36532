"""Scratch folders for the files the studio hands to Gradio (images, animations), and their clean-up.

Every folder lives under one root per user in the system's temp folder, named after the process
that made it. A folder goes when the object that owns it does, or when its process exits; folders
left by a studio that was killed are removed by the next one.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import weakref
from pathlib import Path

from studio.jobs import process_alive


def scratch_root() -> Path:
    """This user's scratch root, made private on first use.

    Raises:
        RuntimeError: The root exists but is a link or belongs to another user.
    """
    uid = os.getuid() if hasattr(os, "getuid") else None
    root = Path(tempfile.gettempdir()) / (f"gan-studio-{uid}" if uid is not None else "gan-studio")
    root.mkdir(mode=0o700, exist_ok=True)
    info = root.lstat()
    # The temp folder is shared: a root planted by someone else would receive this user's files.
    if stat.S_ISLNK(info.st_mode) or (uid is not None and info.st_uid != uid):
        raise RuntimeError(f"{root} is not this user's own folder: remove it, or set TMPDIR elsewhere")
    return root


def scratch_dir(owner: object, kind: str) -> Path:
    """A new folder for ``owner``'s files, removed when ``owner`` is garbage-collected or the process exits.

    Args:
        owner: The object whose files the folder holds.
        kind: A word in the folder's name, such as "images".
    """
    root = scratch_root()
    remove_orphans(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{kind}-", dir=root))
    weakref.finalize(owner, shutil.rmtree, folder, True)
    return folder


def remove_orphans(root: Path) -> None:
    """Remove the folders under ``root`` whose process is gone (a studio killed before it could clean up)."""
    for folder in root.iterdir():
        pid = folder.name.partition("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def keep_newest(folder: Path, keep: int, pattern: str = "*") -> None:
    """Delete all but the ``keep`` most recently modified files in ``folder`` that match ``pattern``."""
    files = sorted(folder.glob(pattern), key=_mtime)
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # removed meanwhile by another session's clean-up
        return 0.0

