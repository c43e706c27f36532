"""The Explore tab's image files: recipes embedded, repeats free, old files pruned, Hub names safe."""

from pathlib import Path

import numpy as np
from PIL import Image

from studio.recipe import Recipe, read_recipe
from studio.ui.files import ImageFiles


def test_files_carry_their_recipe_and_are_pruned_to_the_newest() -> None:
    files = ImageFiles(keep=50)
    image = np.zeros((4, 4, 3), np.uint8)
    first = files.save(image, Recipe("alice/cats", "", 0))
    assert read_recipe(open(first, "rb").read()).model == "alice/cats"  # a Hub name makes no sub-folder
    assert files.save(image, Recipe("alice/cats", "", 0)) == first  # the same recipe is the same file
    paths = [files.save(image, Recipe("tiny", "", seed)) for seed in range(1, 200)]
    kept = set(str(p) for p in files.folder.glob("*.png"))
    assert len(kept) == 50 and paths[-1] in kept and first not in kept


def test_pictures_are_named_by_their_pixels_and_written_once() -> None:
    files = ImageFiles(keep=50)
    image = np.random.default_rng(0).integers(0, 256, (8, 24, 3), dtype=np.uint8)
    path = files.picture(image)
    before = Path(path).stat().st_mtime_ns
    assert files.picture(image.copy()) == path and Path(path).stat().st_mtime_ns == before  # not rewritten
    with Image.open(path) as png:
        assert np.array_equal(np.asarray(png), image)
    assert files.picture(image[:, ::-1]) != path and files.picture(image.reshape(24, 8, 3)) != path
