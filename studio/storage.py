"""Where the studio keeps its files, and how it writes them without ever leaving half a file."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def studio_home() -> Path:
    """The studio's home folder: ``$STUDIO_HOME``, else ``~/.cache/gan-studio``."""
    return Path(os.environ.get("STUDIO_HOME") or Path.home() / ".cache" / "gan-studio").expanduser()


@contextmanager
def temporary_home(path: Path) -> Iterator[Path]:
    """Make ``path`` the studio's home (``$STUDIO_HOME``, which child processes inherit) inside the block.

    The variable is restored afterwards, to its old value or to unset, even when the block fails.
    """
    before = os.environ.get("STUDIO_HOME")
    os.environ["STUDIO_HOME"] = str(path)
    try:
        yield Path(path)
    finally:
        if before is None:
            os.environ.pop("STUDIO_HOME", None)
        else:
            os.environ["STUDIO_HOME"] = before


def models_dir() -> Path:
    """The folder that holds one sub-folder per local model."""
    return studio_home() / "models"


def hub_dir() -> Path:
    """The folder that holds the models pulled from the Hub, one ``OWNER/NAME`` sub-folder each."""
    return studio_home() / "hub"


def datasets_dir() -> Path:
    """The folder that holds one sub-folder per data set."""
    return studio_home() / "datasets"


def jobs_dir() -> Path:
    """The folder that holds one sub-folder per background fine-tune job."""
    return studio_home() / "jobs"


def runs_dir() -> Path:
    """The folder that holds one sub-folder of checkpoints per training run."""
    return studio_home() / "runs"


def browser_secret_file() -> Path:
    """The key that encrypts each browser's owner id (kept so a restarted server knows its visitors)."""
    return studio_home() / "browser-secret"


# The Hub's limit for an OWNER/NAME id, and every name's: file names the studio derives from a name
# (its folder, a temporary folder beside it, image files) stay within the file system's.
MAX_NAME_LENGTH = 96
# The one rule for a name the studio gives a folder (model, data set, run); each part of an OWNER/NAME
# Hub id must be one too. No separators, no leading dot: a name is never a path.
NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")


def check_name(name: str, what: str = "model") -> str:
    """Return ``name`` if it is a usable name for a ``what`` (model, data set...), else raise.

    Raises:
        ValueError: In the studio's one wording for a bad name.
    """
    if isinstance(name, str) and NAME.fullmatch(name):
        return name
    shown = repr(name) if len(str(name)) <= MAX_NAME_LENGTH else f"a name of {len(name)} characters"
    raise ValueError(f"{shown} is not a usable {what} name: use letters, digits, '.', '_' and '-', at most "
                     f"{MAX_NAME_LENGTH} characters, starting with a letter or digit")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write a file through ``write(tmp_path)``, then rename it over ``path``.

    A reader sees either the old file or the complete new one, never a partial write, even if the
    process is killed midway.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give the usual permissions
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` that becomes ``path`` only if the block succeeds.

    An existing folder at ``path`` is replaced only after the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# Far longer than any reader takes to load a folder it resolved (a model loads in well under a second).
SWAP_GRACE_S = 60.0


def _versions(path: Path) -> list[Path]:
    """The hidden version folders of ``path`` that ``swap_dir`` made (only ``path``'s own, whatever its name)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.v-[0-9a-f]{{16}}")
    return [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)] if path.parent.is_dir() else []


@contextmanager
def swap_dir(path: Path) -> Iterator[Path]:
    """Yield a new folder that replaces ``path`` in one atomic step if the block succeeds.

    ``path`` becomes a symbolic link to a hidden version folder beside it; a replacement is a new version
    and one ``rename`` of the link, so a concurrent reader always finds either the old folder or the
    complete new one, never none (``atomic_dir`` renames twice, with a moment in between). The version
    a link replaces is kept until the next swap, and any older one for ``SWAP_GRACE_S`` after it was
    written, so a reader that resolved the link before a swap can finish reading; then it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    version = path.with_name(f".{path.name}.v-{secrets.token_hex(8)}")
    version.mkdir()
    os.chmod(version, 0o777 & ~_umask())
    try:
        yield version
        previous = path.resolve() if path.is_symlink() else None
        legacy = path.exists() and not path.is_symlink()  # a folder from before versions: moved aside once
        if legacy:
            previous = path.with_name(f".{path.name}.v-{secrets.token_hex(8)}")
            os.replace(path, previous)
        link = path.with_name(f".{path.name}.link-{secrets.token_hex(8)}")
        os.symlink(version.name, link)
        os.replace(link, path)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    if legacy:
        shutil.rmtree(previous, ignore_errors=True)
    for old in _versions(path):
        with suppress(FileNotFoundError):  # another swap of the same folder may remove it first
            if old not in (version, previous) and time.time() - old.stat().st_mtime > SWAP_GRACE_S:
                shutil.rmtree(old, ignore_errors=True)
