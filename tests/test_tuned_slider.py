"""The live "base <-> fine-tuned" slider: a fine-tuned model's weights blended toward its base in memory, through
the engine, recipes, the command line, animations and the Explore controls."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio import zoo
from studio.__main__ import main
from studio.animation import PathOptions, draw_frames
from studio.engine import Engine
from studio.models.folder import save_pretrained
from studio.recipe import Recipe, read_recipe, request_for
from studio.sampling import Request
from studio.ui.explore_logic import recipe_from_controls
from tests.conftest import make_tiny_model
from tests.test_remix import blend, style_parents  # noqa: F401 (a fixture)

SEEDS = (0, 1, 2, 3)


def mark_fine_tuned(home: Path, name: str, base: str) -> None:
    """Give model ``name`` the lineage a fine-tune from ``base`` writes."""
    config = replace(zoo.model_config(name), lineage={"base_model": base, "dataset": "art", "steps": 10})
    save_pretrained(home / "models" / name, config, zoo.load(name).generator)


@pytest.fixture
def tuned_pair(home: Path) -> tuple[str, str]:
    """A tiny DCGAN "base" and a model "tuned" fine-tuned from it (other weights, same shape)."""
    make_tiny_model(home, "base", seed=0)
    make_tiny_model(home, "tuned", seed=1)
    mark_fine_tuned(home, "tuned", "base")
    return "base", "tuned"


def drawn(engine: Engine, model: str, tuned: float | None = None) -> np.ndarray:
    return engine.generate(Request(model, SEEDS, "cat", tuned=tuned))


def test_the_ends_are_the_base_and_the_fine_tune_to_the_bit(tuned_pair: tuple[str, str]) -> None:
    base, tuned = tuned_pair
    with Engine() as engine:
        own = drawn(engine, tuned)
        assert np.array_equal(drawn(engine, tuned, 1.0), own)
        assert np.array_equal(drawn(engine, tuned, 0.0), drawn(engine, base))
        assert not np.array_equal(own, drawn(engine, base))


@pytest.mark.parametrize("kind", ["dcgan", pytest.param("stylegan2", marks=pytest.mark.slow)])
def test_a_blend_draws_what_the_blend_command_writes(kind: str, home: Path, request: pytest.FixtureRequest) -> None:
    if kind == "dcgan":
        base, tuned = request.getfixturevalue("tuned_pair")
    else:
        base, tuned = request.getfixturevalue("style_parents")
        mark_fine_tuned(home, tuned, base)
    assert blend(base, tuned, "--alpha", "0.35", "--out", "written") == 0
    with Engine() as engine:
        live = engine.generate(Request(tuned, SEEDS, tuned=0.35))
        assert np.array_equal(live, engine.generate(Request("written", SEEDS)))
        assert not np.array_equal(live, engine.generate(Request(tuned, SEEDS)))


def test_requests_at_several_stops_batched_together_each_get_their_own(tuned_pair: tuple[str, str]) -> None:
    _, tuned = tuned_pair
    stops = (None, 0.0, 0.25, 0.5, 0.75, 1.0) * 2
    with Engine(max_wait_ms=200) as engine:
        alone = {t: drawn(engine, tuned, t) for t in set(stops)}
        batches = engine.stats()["batches"]
        futures = [engine.submit(Request(tuned, SEEDS, "cat", tuned=t)) for t in stops]
        together = [f.result(timeout=60) for f in futures]
        assert engine.stats()["batches"] - batches < len(stops)  # some of them did share a pass
    for t, images in zip(stops, together):
        assert np.array_equal(images, alone[t]), t
    assert len({alone[t].tobytes() for t in (0.0, 0.25, 0.5, 0.75, 1.0)}) == 5


def test_a_model_with_no_base_or_a_missing_base_is_refused_in_words(tuned_pair: tuple[str, str], home: Path) -> None:
    base, tuned = tuned_pair
    make_tiny_model(home, "orphan", seed=2)
    mark_fine_tuned(home, "orphan", "gone")
    with Engine() as engine:
        with pytest.raises(ValueError, match="base is not a fine-tuned model: it has no base model to blend toward"):
            drawn(engine, base, 0.5)
        with pytest.raises(zoo.ModelUnavailable, match="gone"):
            drawn(engine, "orphan", 0.5)
        with pytest.raises(ValueError, match="blend must be a finite number from 0 to 1, not 1.5"):
            Request(tuned, SEEDS, tuned=1.5)
        assert drawn(engine, tuned).shape == (4, 32, 32, 3)  # the refusals hurt nothing


def test_the_recipe_keeps_the_blend_and_replays_it_through_the_command_line(tuned_pair: tuple[str, str],
                                                                            tmp_path: Path) -> None:
    _, tuned = tuned_pair
    out = tmp_path / "half.png"
    assert main(["generate", "--model", tuned, "--seeds", "2", "--class", "dog", "--tuned", "0.5",
                 "--out", str(out)]) == 0
    recipe = read_recipe(out)
    assert recipe.tuned == 0.5 and Recipe.from_json(recipe.to_json()) == recipe
    assert '"tuned":' not in replace(recipe, tuned=None).to_json()  # recipes without a blend read as before
    again = tmp_path / "again.png"
    assert main(["generate", "--recipe", str(out), "--out", str(again)]) == 0
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(again).convert("RGB")), pixels)
    with Engine() as engine:
        assert np.array_equal(engine.generate(request_for(recipe))[0], pixels)
        assert not np.array_equal(engine.generate(request_for(replace(recipe, tuned=None)))[0], pixels)


def test_an_animation_draws_its_frames_with_the_first_keyframes_blend(tuned_pair: tuple[str, str]) -> None:
    _, tuned = tuned_pair
    with Engine() as engine:
        keys = [Recipe(tuned, engine.model(tuned).weights_sha256, s, {"cat": 1.0}, tuned=0.25) for s in (1, 2)]
        frames = list(draw_frames(engine, keys, PathOptions(frames_per_segment=3, loop=True)))
        for frame, key in ((frames[0], keys[0]), (frames[3], keys[1])):  # each segment starts at its keyframe
            assert np.array_equal(frame, engine.generate(request_for(key))[0])
            assert not np.array_equal(frame, engine.generate(request_for(replace(key, tuned=None)))[0])


def test_explore_controls_blend_only_a_fine_tuned_model_whose_base_is_here(tuned_pair: tuple[str, str],
                                                                          home: Path) -> None:
    base, tuned = tuned_pair
    make_tiny_model(home, "orphan", seed=2)
    mark_fine_tuned(home, "orphan", "gone")

    def recipe(model: str, value: float) -> Recipe:
        return recipe_from_controls(zoo.model_config, model, 3, False, "cat", (), 1.0, "sefa", (), tuned=value)

    assert recipe(tuned, 0.4).tuned == 0.4
    assert recipe(tuned, 1.0).tuned is None  # the model's own weights: the recipe it always had
    assert recipe(base, 0.4).tuned is None and recipe("orphan", 0.4).tuned is None
    with pytest.raises(ValueError, match="not nan"):
        recipe(tuned, float("nan"))
