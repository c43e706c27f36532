"""Folder swaps: a reader never sees a model folder missing or half-written while it is replaced."""

import os
import threading
import time
from pathlib import Path

import pytest

from studio.storage import SWAP_GRACE_S, swap_dir


def write_version(path: Path, n: int) -> None:
    with swap_dir(path) as tmp:
        (tmp / "config.json").write_text(f'{{"version": {n}}}')
        (tmp / "model.safetensors").write_bytes(bytes([n % 256]) * 4096)


def test_a_concurrent_reader_always_finds_one_whole_version(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "m"
    write_version(folder, 0)
    stop, seen, missing, torn = threading.Event(), set(), [], []

    def read() -> None:
        while not stop.is_set():
            try:
                real = folder.resolve()  # as folder.from_pretrained does: one version for both files
                version = int((real / "config.json").read_text().split(":")[1].rstrip("}"))
                weights = (real / "model.safetensors").read_bytes()
            except FileNotFoundError as e:
                missing.append(str(e))
                continue
            seen.add(version)
            if weights != bytes([version % 256]) * 4096:
                torn.append(version)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for n in range(1, 301):
        write_version(folder, n)
    stop.set()
    for reader in readers:
        reader.join()
    assert missing == [] and torn == []
    assert len(seen) > 1  # the readers really ran during the swaps
    assert (folder / "config.json").read_text() == '{"version": 300}'
    old = time.time() - SWAP_GRACE_S - 1
    for version in folder.parent.glob(".m.v-*"):
        os.utime(version, (old, old))
    write_version(folder, 301)
    versions = list(folder.parent.glob(".m.v-*"))
    assert len(versions) == 2  # past the grace: only the current one and the one it replaced are left


def test_a_failed_write_leaves_the_old_version_and_no_debris(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_version(folder, 1)
    with pytest.raises(RuntimeError, match="disk full"):
        with swap_dir(folder) as tmp:
            (tmp / "config.json").write_text("half")
            raise RuntimeError("disk full")
    assert (folder / "config.json").read_text() == '{"version": 1}'
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "m") == [folder.resolve().name]


def test_a_folder_from_before_versions_is_replaced_too(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("old")
    write_version(folder, 2)
    assert folder.is_symlink() and (folder / "config.json").read_text() == '{"version": 2}'
    assert [p.name for p in tmp_path.iterdir() if p.name != "m"] == [folder.resolve().name]
