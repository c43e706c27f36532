"""The files the tabs hand to Gradio: drawn PNGs with their recipes, animations, and pictures from the home.

Gradio serves files from its own cache: a tab gives it either a scratch file (``ImageFiles``,
``AnimationFiles``, see ``studio.ui.scratch``) or pixels read from the studio's home (``pixels``), so no
file in the home is ever served.

Pictures that two visitors may be shown at the same moment (the first page's variations and strips, a
base model's previews) go to Gradio as finished files, never as arrays: Gradio (6.31) writes an array
into its cache by rewriting the file of those pixels in place, so a second visitor given the same
pixels meanwhile truncates the file the first one is downloading ("Too little data for declared
Content-Length", a broken image). A file it copies atomically, and reuses once copied.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from studio import animation
from studio.media import save_png
from studio.recipe import Recipe, save_with_recipe
from studio.ui.scratch import keep_newest, scratch_dir


class ImageFiles:
    """PNG files of drawn images, each carrying its recipe, named by the recipe so repeats are free.

    Only the newest ``keep`` files are kept: by then Gradio has copied older ones to its own cache,
    and a studio that runs for weeks must not fill the disk. The folder goes with this object (or
    at exit).
    """

    def __init__(self, keep: int = 2000) -> None:
        self.folder = scratch_dir(self, "images")
        self.keep = keep
        self._saved = 0

    def save(self, image: np.ndarray, recipe: Recipe) -> str:
        """The path of a PNG of ``image`` with ``recipe`` embedded."""
        name = hashlib.sha256(recipe.to_json().encode()).hexdigest()[:24]
        path = self.folder / f"{recipe.model.replace('/', '--')}-seed{recipe.seed}-{name}.png"
        if not path.exists():
            save_with_recipe(path, image, recipe)
            self._saved_one()
        return str(path)

    def picture(self, image: np.ndarray) -> str:
        """The path of a PNG of ``image`` without a recipe (a strip, a grid of previews), named by its pixels."""
        image = np.ascontiguousarray(image)
        name = hashlib.sha256(str(image.shape).encode() + image.tobytes()).hexdigest()[:24]
        path = self.folder / f"picture-{name}.png"
        if not path.exists():
            save_png(path, image)
            self._saved_one()
        return str(path)

    def _saved_one(self) -> None:
        self._saved += 1
        if self._saved % 100 == 0:
            keep_newest(self.folder, self.keep, "*.png")


class AnimationFiles:
    """Animation files named by their settings: the newest ``keep`` stay; the folder goes with this object."""

    def __init__(self, keep: int = 20) -> None:
        self.folder = scratch_dir(self, "animations")
        self.keep = keep

    def write(self, name: str, frames: Iterator[np.ndarray], fps: float, size: int) -> str:
        """The path of animation ``name``, written from ``frames`` unless it exists (it is then that very animation)."""
        path = self.folder / name
        if not path.exists():
            animation.export(path, frames, fps, size)
            keep_newest(self.folder, self.keep, "[!.]*")  # not the hidden files of writes under way
        return str(path)


def pixels(path: str | Path | None) -> np.ndarray | None:
    """A PNG from the studio's home as pixels, for Gradio to copy into its cache (None if there is none yet)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, TypeError):  # not written yet, or replaced while being read: the next tick shows it
        return None


def stamp(path: str | None) -> tuple[str, int] | None:
    """``path`` and its modification time in ns (None if there is no such file yet): which version of it this is."""
    try:
        return (path, os.stat(path).st_mtime_ns) if path else None
    except OSError:
        return None
