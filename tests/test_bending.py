"""Network bending: transforms of one layer's feature maps, on both families, in recipes, the CLI and animations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio import animation, bending, recipe, zoo
from studio.bending import Bend
from studio.engine import Engine
from studio.sampling import Request, request_inputs
from tests.conftest import run_cli
from tests.test_style_controls import save_style_model


@pytest.fixture
def models(tiny: str, home: Path) -> list[str]:
    """A tiny conditional DCGAN and a tiny StyleGAN2 (16 px, 3 bendable layers)."""
    save_style_model(home)
    return [tiny, "sg"]


def draw(engine: Engine, model: str, *bends: Bend, seeds: tuple[int, ...] = (1, 2)) -> np.ndarray:
    return engine.generate(Request(model, seeds, bends=bends))


def test_neutral_bends_leave_the_pixels_bit_identical(models: list[str]) -> None:
    neutral = [Bend(0, "multiply", 1.0), Bend(1, "rotate", 0.0), Bend(1, "rotate", 360.0), Bend(0, "translate", 0.0),
               Bend(2, "scale", 1.0), Bend(1, "erode", 1.0), Bend(0, "dilate", 1.0)]
    with Engine("cpu") as engine:
        for model in models:
            np.testing.assert_array_equal(draw(engine, model, *neutral), draw(engine, model))


def test_four_quarter_turns_are_no_turn_and_each_op_changes_the_picture(models: list[str]) -> None:
    maps = torch.randn(2, 5, 8, 8)
    assert torch.equal(bending.apply([Bend(0, "rotate", 90.0)] * 4, maps), maps)
    with Engine("cpu") as engine:
        for model in models:
            plain = draw(engine, model)
            np.testing.assert_array_equal(draw(engine, model, *[Bend(1, "rotate", 90.0)] * 4), plain)
            for op in bending.OPS:
                bent = draw(engine, model, Bend(1, op, bending.OPS[op][0]))
                assert not np.array_equal(bent, plain), f"{op} left {model}'s pixels as they were"


def test_a_bend_transforms_only_its_channels_of_its_layer(models: list[str]) -> None:
    bends = (Bend(0, "ablate", channels=(0, 2)), Bend(0, "rotate", 90.0, share=50.0, seed=4))
    for model in models:
        loaded = zoo.load(model)
        inputs = request_inputs(loaded, Request(model, (1,)))
        layers = loaded.generator.bendable_layers()
        seen: list[torch.Tensor] = []
        record = lambda module, args, out: seen.append(out.detach().clone())  # noqa: E731
        before = layers[0].register_forward_hook(record)  # runs before the bend's own hook
        with torch.no_grad(), bending.bent(layers, [bends]):
            after = layers[0].register_forward_hook(record)  # runs after it: sees the bent maps
            loaded.generator.draw(inputs.latents, inputs.c)
        before.remove()
        after.remove()
        plain, bent = seen
        chosen = bending.selected(bends[1], plain.shape[1])
        assert len(chosen) == round(plain.shape[1] / 2)
        expected = plain.clone()
        expected[:, :3] = 0
        expected[:, chosen] = torch.rot90(expected[:, chosen], 1, dims=(-2, -1))
        assert torch.equal(bent, expected)


def test_images_with_different_bends_share_one_batch(models: list[str]) -> None:
    rotate = Bend(1, "rotate", 90.0)
    with Engine("cpu", max_wait_ms=100) as engine:
        for model in models:
            alone = [draw(engine, model, rotate, seeds=(3,)), draw(engine, model, seeds=(3,))]
            futures = [engine.submit(Request(model, (3,), bends=(rotate,))), engine.submit(Request(model, (3,)))]
            together = [f.result() for f in futures]
            for a, b in zip(alone, together):
                np.testing.assert_array_equal(a, b)


def test_bends_parse_refuse_in_words_and_live_in_the_recipe(tiny: str) -> None:
    assert bending.parse("2:rotate=90") == Bend(2, "rotate", 90.0)
    assert bending.parse("1:ablate@0-31") == Bend(1, "ablate", 0.0, (0, 31))
    assert bending.parse("3:multiply=1.5@random=25%") == Bend(3, "multiply", 1.5, share=25.0)
    assert bending.parse("3:multiply=1.5@random=25%:7").seed == 7
    for spec, words in (("2:twist=3", "unknown bend"), ("rotate=90", "LAYER:OP"), ("1:erode=4", "odd"),
                        ("1:multiply=1e9", "from -10 to 10"), ("1:ablate@9-2", "FIRST-LAST")):
        with pytest.raises(ValueError, match=words):
            bending.parse(spec)
    made = recipe.Recipe(tiny, "", 3, bends=(Bend(1, "ablate", channels=(0, 3)), Bend(0, "scale", 2.0, share=10.0)))
    assert recipe.Recipe.from_json(made.to_json()) == made
    assert "bends" not in recipe.Recipe(tiny, "", 3).to_json()  # recipes without bends read as before


@pytest.mark.slow
def test_generate_bends_from_the_command_line_and_the_png_replays(tiny: str, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "bent.png"
    result = run_cli("generate", "--model", tiny, "--seeds", "4", "--bend", "1:rotate=90", "--bend",
                     "0:multiply=1.5@random=25%", "--out", str(out), home=home)
    assert result.returncode == 0, result.stderr
    assert recipe.read_recipe(out).bends == (Bend(1, "rotate", 90.0), Bend(0, "multiply", 1.5, share=25.0))
    with Engine("cpu") as engine:
        expected = draw(engine, tiny, Bend(1, "rotate", 90.0), Bend(0, "multiply", 1.5, share=25.0), seeds=(4,))
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), expected[0])
    again = run_cli("generate", "--recipe", str(out), "--out", str(tmp_path / "again.png"), home=home)
    assert again.returncode == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "again.png")),
                                                    np.asarray(Image.open(out)))
    for bad, words in (("7:rotate=90", "does not exist"), ("1:twist", "unknown bend"), ("0:ablate@0-999", "pass layer 0")):
        refused = run_cli("generate", "--model", tiny, "--seeds", "1", "--bend", bad, "--out", str(tmp_path / "no.png"),
                          home=home)
        assert refused.returncode == 2 and words in refused.stderr and not (tmp_path / "no.png").exists()


def test_a_bent_keyframe_animation_unfolds_the_bend(models: list[str]) -> None:
    options = animation.PathOptions(4, "lerp")
    with Engine("cpu") as engine:
        for model in models:
            sha = engine.model(model).weights_sha256
            keys = [recipe.Recipe(model, sha, 1, bends=(Bend(1, "rotate", 0.0),)),
                    recipe.Recipe(model, sha, 1, bends=(Bend(1, "rotate", 90.0),))]
            frames = list(animation.draw_frames(engine, keys, options))
            assert [b[0].value for b in animation.frame_bends(keys, options)] == [0.0, 22.5, 45.0, 67.5]
            halfway = engine.generate(replace_bends(recipe.request_for(keys[0]), Bend(1, "rotate", 45.0)))
            np.testing.assert_array_equal(frames[0], engine.generate(recipe.request_for(keys[0]))[0])
            np.testing.assert_array_equal(frames[2], halfway[0])
            assert not np.array_equal(frames[0], frames[2])


def replace_bends(request: Request, *bends: Bend) -> Request:
    return replace(request, bends=bends)
