"""The Explore tab's callbacks, without a browser: controls -> recipe -> pixels, context, history, keyframes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.animation import MAX_KEYFRAMES
from studio.bending import Bend
from studio.engine import Engine
from studio.recipe import Recipe, RecipeError, read_recipe, request_for
from studio.ui import explore_logic as logic
from studio.ui.files import ImageFiles
from tests.test_style_controls import save_style_model


@pytest.fixture
def engine(tiny: str) -> Iterator[Engine]:
    with Engine(device="cpu", max_wait_ms=0) as e:
        yield e


def recipe(**changes) -> Recipe:
    return replace(Recipe("tiny", "", 5, {"dog": 1.0}, 0.8, "sefa", {}), **changes)


def test_style_controls_become_recipe_fields_on_a_stylegan_and_are_ignored_on_a_dcgan(engine: Engine,
                                                                                        home: Path) -> None:
    save_style_model(home)  # 6 style layers
    args = (engine.config, "sg", 5, False, "ink", (), 0.7, "sefa", (1.0,))
    made = logic.recipe_from_controls(*args, (9, 4.0, 2.0, 11, 1, 3))
    assert (made.mix_seed, made.mix_layers, made.noise_seed, made.edit_layers) == (9, (2, 4), 11, (1, 3))
    plain = logic.recipe_from_controls(*args, (None, 0, 3, None, 0, 5))  # sliders on every layer: the default
    assert (plain.mix_seed, plain.mix_layers, plain.noise_seed, plain.edit_layers) == (None, None, None, None)
    dcgan = logic.recipe_from_controls(engine.config, "tiny", 5, False, "dog", (), 0.8, "sefa", (), (9, 0, 3, 11, 0, 0))
    assert dcgan == Recipe("tiny", "", 5, {"dog": 1.0}, 0.8, "sefa", {})
    for style, words in (((9, 0, 6, None, 0, 5), "from 0 to 5"), ((None, 0, 3, None, float("inf"), 5), "whole numbers"),
                         ((-1, 0, 3, None, 0, 5), "seed")):
        with pytest.raises(ValueError, match=words):
            logic.recipe_from_controls(*args, style)
    # The paper's bands, cut to the model's layers.
    assert [logic.band_layers(b, 18) for b in ("coarse", "middle", "fine")] == [(0, 3), (4, 7), (8, 17)]
    assert [logic.band_layers(b, 6) for b in ("coarse", "middle", "fine")] == [(0, 3), (4, 5), (5, 5)]


def test_controls_make_a_recipe_and_refuse_in_words(engine: Engine) -> None:
    made = logic.recipe_from_controls(engine.config, "tiny", 5, True, "dog", (0.25, 0.0, 0.75), 0.8, "sefa",
                                      (0.0, -2.5))
    assert made == Recipe("tiny", "", 5, {"cat": 0.25, "fox": 0.75}, 0.8, "sefa", {1: -2.5})
    single = logic.recipe_from_controls(engine.config, "tiny", 5, False, "dog", (0.25,), 0.8, "sefa", ())
    assert single.classes == {"dog": 1.0}
    for args, message in [((None, 5, False, "dog"), "Pick a model."), (("tiny", None, False, "dog"), "Enter a seed"),
                          (("tiny", 5, True, "dog"), "Give at least one class a weight above zero")]:
        with pytest.raises(ValueError, match=message):
            logic.recipe_from_controls(engine.config, *args, (0.0, 0.0, 0.0), 0.8, "sefa", ())


def test_draw_saves_the_engines_pixels_with_the_recipe_naming_the_weights(engine: Engine) -> None:
    files = ImageFiles()
    path, drawn_json = logic.draw(engine, files, recipe().to_json())
    drawn = Recipe.from_json(drawn_json)
    model = engine.model("tiny")
    assert drawn.weights_sha256 == model.weights_sha256 and drawn == read_recipe(Path(path))
    assert np.array_equal(pixels(path), engine.generate(request_for(recipe()))[0])
    with pytest.raises(RecipeError, match="weights"):
        logic.draw(engine, files, recipe(weights_sha256="0" * 64).to_json())


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB"))


def test_variations_are_the_next_seeds_with_the_same_settings_each_with_its_recipe(engine: Engine) -> None:
    files = ImageFiles()
    shown = logic.variations(engine, files, recipe(seed=2**32 - 2))
    seeds = [2**32 - 1, *range(7)]  # wrapping past the largest seed
    assert [caption for _, caption in shown] == [f"seed {s}" for s in seeds]
    for (path, _), seed in zip(shown, seeds):
        assert read_recipe(Path(path)) == recipe(seed=seed)  # a variation dragged out replays as itself
        assert np.array_equal(pixels(path), engine.generate(request_for(recipe(seed=seed)))[0])
    assert logic.picked_seed(2**32 - 2, 1) == 0


def test_a_sliders_strip_shows_the_image_at_each_strip_value(engine: Engine) -> None:
    current = recipe(edits={1: 1.5})
    files = ImageFiles()
    strips = [pixels(path) for path in logic.strip_views(engine, files, current, 3)]
    assert len(strips) == 3
    side = engine.config("tiny").resolution
    n = len(logic.STRIP_VALUES)
    for index, strip in enumerate(strips):
        for position, value in enumerate(logic.STRIP_VALUES):
            cell = strip[:, position * (side + 1) : position * (side + 1) + side]
            edits = {**current.edits, index: value}
            expected = engine.generate(request_for(recipe(edits={i: v for i, v in edits.items() if v})))[0]
            # The strip adds the offset to the already-edited latent: equal up to float rounding.
            assert np.abs(cell.astype(int) - expected.astype(int)).max() <= 1
        assert strip.shape[1] == n * side + (n - 1)
    assert len(logic.strip_views(engine, files, current, 1000)) == 16  # as many as the tiny model's z has


def test_history_pushes_steps_and_forgets_the_forward_branch() -> None:
    history = logic.EMPTY_HISTORY
    for state in ("a", "b", "c"):
        history = logic.pushed(history, recipe(seed=ord(state)).to_json())
    assert logic.pushed(history, recipe(seed=ord("c")).to_json()) is history  # nothing changed
    back, shown = logic.history_step(history, -1)
    assert shown.seed == ord("b") and back["index"] == 1
    branched = logic.pushed(back, recipe(seed=ord("d")).to_json())
    assert [Recipe.from_json(t).seed for t in branched["items"]] == [ord("a"), ord("b"), ord("d")]
    with pytest.raises(ValueError, match="No further history in that direction"):
        logic.history_step(branched, 1)
    for seed in range(logic.HISTORY + 5):
        branched = logic.pushed(branched, recipe(seed=seed).to_json())
    assert len(branched["items"]) == logic.HISTORY


def test_restoring_needs_the_model_and_its_weights(engine: Engine) -> None:
    with pytest.raises(ValueError, match="needs the model 'gone'"):
        logic.check_restorable(engine, recipe(model="gone"), ["tiny"])
    with pytest.raises(RecipeError, match="weights"):
        logic.check_restorable(engine, recipe(weights_sha256="f" * 64), ["tiny"])
    drawn = recipe(weights_sha256=engine.model("tiny").weights_sha256)
    assert logic.check_restorable(engine, drawn, ["tiny"]) == drawn
    with pytest.raises(ValueError, match="Drop a PNG saved by the studio or paste a recipe first"):
        logic.recipe_from_source(None)
    assert logic.recipe_from_source(recipe().to_json().encode()) == recipe()


def test_keyframes_and_favourites_have_limits_in_words() -> None:
    frames = [recipe(seed=s).to_json() for s in range(MAX_KEYFRAMES - 1)]
    frames = logic.with_keyframe(frames, recipe().to_json())
    assert len(frames) == MAX_KEYFRAMES
    with pytest.raises(ValueError, match=f"at most {MAX_KEYFRAMES} keyframes"):
        logic.with_keyframe(frames, recipe().to_json())
    with pytest.raises(ValueError, match="Draw an image first"):
        logic.with_keyframe([], "")
    with pytest.raises(ValueError, match="Nothing to keep yet"):
        logic.kept([], None, recipe().to_json())
    assert logic.kept([], "a.png", recipe().to_json()) == [("a.png", "tiny · seed 5")]


def test_slider_names_are_kept_in_the_model_folder(engine: Engine) -> None:
    logic.name_slider(engine, "tiny", "sefa", 2, "  smile ")
    assert logic.slider_labels(engine, "tiny", "sefa", 4) == ["direction 0", "direction 1", "smile", "direction 3"]
    assert logic.slider_labels(engine, "tiny", "pca", 3)[2] == "direction 2"


def test_the_model_card_says_what_the_config_says(engine: Engine) -> None:
    text = logic.card_markdown("tiny", engine.config("tiny"))
    assert "**Tiny test model**" in text and "32×32" in text and "3 classes" in text and "licence MIT" in text
    assert "Fine-tuned" not in text
    lineage = replace(engine.config("tiny"), lineage={"base_model": "eyes", "dataset": "prints", "steps": 600,
                                                      "swd": 12.34})
    assert "Fine-tuned from **eyes** · data set `prints` · 600 steps · SWD 12.3" in logic.card_markdown("t", lineage)


def test_all_strips_are_one_engine_pass(engine: Engine) -> None:
    before = engine.stats()["batches"]
    logic.strip_views(engine, ImageFiles(), recipe(), 4)
    assert engine.stats()["batches"] == before + 1


def test_the_bend_panel_stacks_bends_into_the_recipe(engine: Engine) -> None:
    text = logic.added_bend("", "rotate", 2, 90, "")
    text = logic.added_bend(text, "multiply", 0, 1.5, "random=25%")
    assert text == "2:rotate=90\n0:multiply=1.5@random=25%"
    made = logic.recipe_from_controls(engine.config, "tiny", 5, False, "dog", (), 0.8, "sefa", (), bends=text)
    assert made.bends == (Bend(2, "rotate", 90.0), Bend(0, "multiply", 1.5, share=25.0))
    for args, words in ((("rotate", None, 90, ""), "a layer and a value"), (("erode", 1, 4, ""), "odd"),
                        (("ablate", 1, 0, "9-2"), "FIRST-LAST")):
        with pytest.raises(ValueError, match=words):
            logic.added_bend(text, *args)


# -- start from an image (projection) -----------------------------------------------------------------------


def found_recipe() -> Recipe:
    """A tiny-model recipe carrying a projected latent."""
    import torch

    from studio.recipe import Latent
    return recipe(latent=Latent.of(torch.linspace(-1, 1, 16)))


def test_a_projected_latent_follows_its_model_and_seed_through_the_controls(engine: Engine) -> None:
    found = found_recipe()
    hidden = logic.found_of(found)
    assert logic.with_found(recipe(), hidden) == found  # the controls rebuild the projected state
    assert logic.with_found(recipe(seed=6), hidden).latent is None  # another seed leaves it behind
    assert logic.with_found(recipe(model="other"), hidden).latent is None
    assert logic.found_of(recipe()) == "" and logic.with_found(recipe(), "") == recipe()
    with pytest.raises(RecipeError, match="not JSON"):
        logic.with_found(recipe(), "{")


def test_variations_of_a_projected_image_are_the_neighbouring_seeds_own_images(engine: Engine) -> None:
    files = ImageFiles()  # the files live as long as it does
    shown = logic.variations(engine, files, found_recipe())
    for path, caption in shown:
        assert read_recipe(Path(path)).latent is None
        assert np.array_equal(pixels(path), engine.generate(request_for(recipe(seed=int(caption[5:]))))[0])


def test_a_dropped_picture_streams_previews_then_gives_the_found_recipe(engine: Engine, tmp_path: Path) -> None:
    from studio.ui import project_logic

    Image.new("RGB", (40, 30), (200, 40, 40)).save(tmp_path / "red.png")
    reports = list(project_logic.projected(engine, str(tmp_path / "red.png"), "tiny", 5, 20, "dog", "session-a"))
    assert all(found is None for _, _, found in reports[:-1]) and len(reports) >= 3
    image, status, found = reports[-1]
    assert status.startswith("Done") and image.shape == (32, 32, 3)
    assert found.seed == 5 and found.classes == {"dog": 1.0} and found.latent.shape == (16,)
    with pytest.raises(ValueError, match="Drop a picture first"):
        next(project_logic.projected(engine, None, "tiny", 5, 20, None, "session-a"))


def test_stop_ends_a_running_projection_and_keeps_its_best(engine: Engine, tmp_path: Path) -> None:
    from studio.ui import project_logic

    Image.new("RGB", (40, 30), (20, 40, 200)).save(tmp_path / "blue.png")
    search = project_logic.projected(engine, str(tmp_path / "blue.png"), "tiny", 1, 1000, None, "session-b")
    next(search)  # running: the first preview
    with pytest.raises(ValueError, match="already running here"):
        next(project_logic.projected(engine, str(tmp_path / "blue.png"), "tiny", 1, 10, None, "session-b"))
    project_logic.stop("session-b")
    *_, (_, status, found) = search
    assert status.startswith("Stopped") and found.latent is not None
