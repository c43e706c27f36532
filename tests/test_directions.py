"""Semantic directions on a real model folder: caching, meaning, slider names."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from studio import directions, zoo
from studio.engine import Engine, Request


@pytest.mark.parametrize("method", directions.METHODS)
def test_directions_are_orthonormal_cached_and_keyed_by_weights(tiny: str, method: str) -> None:
    model = zoo.load(tiny)
    dirs = directions.load_or_compute(model, method)
    assert dirs.shape == (16, 16)  # min(MAX_DIRECTIONS, z_dim) for the tiny model's 16-d latent
    assert torch.allclose(dirs @ dirs.T, torch.eye(16), atol=1e-4)
    cache = model.folder / directions.DIRECTIONS_FILE
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    reloaded = zoo.load(tiny)  # a fresh load has no directions in memory: they come from the file
    assert torch.equal(directions.load_or_compute(reloaded, method), dirs)
    assert cache.stat().st_mtime_ns == stamp  # served from the cache, not recomputed
    cache.unlink()
    assert torch.equal(directions.load_or_compute(model, method), dirs)  # the loaded model keeps them
    assert not cache.exists()


def test_a_damaged_cache_is_recomputed(tiny: str) -> None:
    model = zoo.load(tiny)
    first = directions.load_or_compute(model, "sefa")
    (model.folder / directions.DIRECTIONS_FILE).write_bytes(b"garbage")
    assert torch.equal(directions.load_or_compute(zoo.load(tiny), "sefa"), first)
    assert load_file(str(model.folder / directions.DIRECTIONS_FILE))  # rewritten whole


@pytest.mark.slow
@pytest.mark.parametrize("method", directions.METHODS)
def test_moving_further_along_a_direction_changes_the_image_more(eyes_engine: Engine, method: str) -> None:
    base = eyes_engine.generate(Request("omniart-eyes", (4,), "blue"))[0].astype(int)
    for index in (0, 1, 2):
        change = []
        for value in (1.0, 2.5, 5.0):
            edited = eyes_engine.generate(Request("omniart-eyes", (4,), "blue", 1.0, ((index, value),), method))[0]
            change.append(np.abs(edited.astype(int) - base).mean())
        assert 0 < change[0] < change[1] < change[2], (method, index, change)


def test_slider_names_are_saved_with_the_model(tiny: str, home: Path) -> None:
    folder = home / "models" / tiny
    assert directions.slider_names(folder, "sefa", 3) == ["direction 0", "direction 1", "direction 2"]
    directions.rename_slider(folder, "sefa", 1, "  eye openness ")
    directions.rename_slider(folder, "pca", 0, "lighting")
    assert directions.slider_names(folder, "sefa", 3) == ["direction 0", "eye openness", "direction 2"]
    assert directions.slider_names(folder, "pca", 1) == ["lighting"]
    directions.rename_slider(folder, "sefa", 1, "")  # an empty name restores the default
    assert directions.slider_names(folder, "sefa", 2) == ["direction 0", "direction 1"]
