"""Recipes: the JSON document, its PNG chunk, and exact regeneration."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio import zoo
from studio.engine import Engine
from studio.recipe import Recipe, RecipeError, check_weights, read_recipe, request_for, save_with_recipe


def sample(model: str = "tiny", sha: str = "ab" * 32) -> Recipe:
    return Recipe(model, sha, 1234, {"cat": 0.6, "fox": 0.4}, 0.7, "pca", {0: 2.5, 3: -1.25})


def test_json_round_trip() -> None:
    recipe = sample()
    assert Recipe.from_json(recipe.to_json()) == recipe


@pytest.mark.parametrize(
    ("text", "message"),
    [("not json", "not JSON"), ("[]", "not a recipe"), ('{"format": "other"}', "not a recipe"),
     ('{"format": "gan-studio-recipe/1", "model": "m"}', "missing 'weights_sha256'"),
     ('{"format": "gan-studio-recipe/1", "model": "m", "weights_sha256": "", "seed": "5", "classes": {}, '
      '"truncation": 1, "directions": "sefa", "edits": {}}', "'seed' has the wrong type"),
     ('{"format": "gan-studio-recipe/1", "model": "m", "weights_sha256": "", "seed": -1, "classes": {}, '
      '"truncation": 1, "directions": "sefa", "edits": {}}', "out of range")],
)
def test_bad_recipes_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        Recipe.from_json(text)


def test_png_round_trip_regenerates_bit_exact_pixels(tiny: str, tmp_path: Path) -> None:
    with Engine() as engine:
        model = engine.cache.get(tiny)
        recipe = replace(sample(), weights_sha256=model.weights_sha256)
        image = engine.generate(request_for(recipe))[0]
        save_with_recipe(tmp_path / "a.png", image, recipe)
        back = read_recipe(tmp_path / "a.png")
        assert back == recipe
        again = engine.generate(request_for(back))[0]
    assert np.array_equal(again, image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), image)


def test_pngs_without_a_recipe_and_other_files_are_refused(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(RecipeError, match="carries no GAN Studio recipe"):
        read_recipe(tmp_path / "plain.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(RecipeError, match="could not be read"):
        read_recipe(tmp_path / "broken.png")
    (tmp_path / "x.bin").write_bytes(bytes(range(256)))
    with pytest.raises(RecipeError, match="neither a PNG"):
        read_recipe(tmp_path / "x.bin")
    with pytest.raises(RecipeError, match="cannot read"):
        read_recipe(tmp_path / "missing.png")


def test_other_weights_are_refused(tiny: str) -> None:
    model = zoo.load(tiny)
    check_weights(replace(sample(), weights_sha256=model.weights_sha256), model)
    with pytest.raises(RecipeError, match="other weights of 'tiny'"):
        check_weights(sample(), model)


def test_a_recipe_without_a_found_latent_writes_the_same_json_as_before_the_field_existed() -> None:
    made = Recipe("omniart-eyes", "", 7, {"blue": 1.0}, 0.8, "sefa", {1: 2.0})
    text = made.to_json()
    assert text == (  # the format as it was before projection added its optional field
        '{\n  "format": "gan-studio-recipe/1",\n  "model": "omniart-eyes",\n  "weights_sha256": "",\n  "seed": 7,\n'
        '  "classes": {\n    "blue": 1.0\n  },\n  "truncation": 0.8,\n  "directions": "sefa",\n'
        '  "edits": {\n    "1": 2.0\n  }\n}')
    assert Recipe.from_json(text).to_json() == text
