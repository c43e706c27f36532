"""StyleGAN2 in every tab: truncation in W, style mixing, noise seeds, slider edits on layer ranges, W paths.

Each expectation is computed here from the generator's two halves (``mapping`` and ``synthesis``)
called directly, not through the studio's request path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio import animation, directions, latent, recipe, zoo
from studio.engine import Engine, to_uint8
from studio.models.folder import ModelConfig, save_pretrained
from studio.models.stylegan2 import StyleGAN2Generator
from studio.sampling import Request, request_inputs, strip_inputs
from tests.conftest import run_cli
from tests.test_stylegan2 import randomized
from tests.test_stylegan2 import tiny as tiny_stylegan2
from tests.test_stylegan2_import import write_snapshot

CLASSES = ("ink", "rust")


def save_style_model(home: Path, name: str = "sg", num_classes: int = 2) -> StyleGAN2Generator:
    """A tiny randomised StyleGAN2 (16 px, 6 style layers) saved as model ``name``; returns its generator."""
    config = ModelConfig("stylegan2", tiny_stylegan2(num_classes=num_classes), class_names=CLASSES[:num_classes])
    g = randomized(StyleGAN2Generator(config.arch), seed=3)
    save_pretrained(home / "models" / name, config, g)
    return g


@pytest.fixture
def sg(home: Path) -> StyleGAN2Generator:
    """The saved generator, in the memory layout the engine draws in (``engine.prepare``), so pixels agree
    to the bit."""
    return save_style_model(home).to(memory_format=torch.channels_last)


def mapped(g: StyleGAN2Generator, seeds: list[int], cls: int = 0) -> torch.Tensor:
    """Untruncated w ``[N, w_dim]`` of ``seeds`` with one-hot class ``cls``, straight from the mapping MLP."""
    z = latent.seed_latents(seeds, g.config.z_dim)
    with torch.no_grad():
        return g.mapping.w(z, torch.eye(g.config.num_classes)[[cls] * len(seeds)])


def drawn(g: StyleGAN2Generator, ws: torch.Tensor, **kwargs) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(g.synthesis(ws, **kwargs))


def test_truncation_pulls_w_toward_w_avg_and_zero_gives_the_mean_image(sg: StyleGAN2Generator) -> None:
    model = zoo.load("sg")
    ws = request_inputs(model, Request("sg", (1, 2), "ink", 0.6)).latents
    expected = sg.mapping.w_avg + 0.6 * (mapped(sg, [1, 2]) - sg.mapping.w_avg)
    torch.testing.assert_close(ws, expected[:, None].expand(-1, 6, -1), atol=1e-6, rtol=0)
    with Engine("cpu") as engine:
        mean = engine.generate(Request("sg", (1, 2, 3), "ink", 0.0))
        untruncated = engine.generate(Request("sg", (4,), "ink"))
    assert (mean == mean[0]).all()  # psi 0: every seed is the average style
    np.testing.assert_array_equal(mean[0], drawn(sg, sg.mapping.w_avg.expand(1, 6, -1))[0])
    # psi 1 is the network as its own code runs it: mapping then synthesis with the stored noise.
    with torch.no_grad():
        own = to_uint8(sg(latent.seed_latents([4], 6), torch.eye(2)[[0]]))
    np.testing.assert_array_equal(untruncated, own)


def test_style_mixing_takes_a_layer_range_from_the_second_seed(sg: StyleGAN2Generator) -> None:
    with Engine("cpu") as engine:
        mixed = engine.generate(Request("sg", (1,), "ink", 0.8, mix=(5, 2, 3)))
        everything = engine.generate(Request("sg", (1,), "ink", 0.8, mix=(5, 0, 5)))
        seed5 = engine.generate(Request("sg", (5,), "ink", 0.8))
        plain = engine.generate(Request("sg", (1,), "ink", 0.8))
    w_avg = sg.mapping.w_avg
    own, other = (w_avg + 0.8 * (mapped(sg, [s]) - w_avg) for s in (1, 5))
    ws = own[:, None].repeat(1, 6, 1)
    ws[:, 2:4] = other[:, None]
    np.testing.assert_array_equal(mixed, drawn(sg, ws))
    np.testing.assert_array_equal(everything, seed5)  # all layers from seed 5 is seed 5's image
    assert not np.array_equal(mixed, plain) and not np.array_equal(mixed, seed5)


def test_noise_seeds_reroll_the_detail_reproducibly_and_batch_invariantly(sg: StyleGAN2Generator) -> None:
    with Engine("cpu", max_wait_ms=50) as engine:
        const = engine.generate(Request("sg", (1,), "ink"))
        first = engine.generate(Request("sg", (1,), "ink", noise_seed=7))
        again = engine.generate(Request("sg", (1,), "ink", noise_seed=7))
        other = engine.generate(Request("sg", (1,), "ink", noise_seed=8))
        together = [engine.submit(Request("sg", (1,), "ink", noise_seed=7)), engine.submit(Request("sg", (1,), "ink"))]
        batched = [f.result() for f in together]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, const) and not np.array_equal(first, other)
    np.testing.assert_array_equal(batched[0], first)  # the same noise beside a constant-noise image
    np.testing.assert_array_equal(batched[1], const)
    # The noise is the seed's own Gaussian maps, layer by layer from coarse to fine, drawn on the CPU.
    gen = torch.Generator().manual_seed(7)
    maps = [torch.randn(side, side, generator=gen)[None, None] for side in (4, 8, 8, 16, 16)]
    ws = mapped(sg, [1])[:, None].expand(1, 6, -1)
    x = img = None
    with torch.no_grad():
        for block, noise, start in zip(sg.synthesis.blocks(), (maps[:1], maps[1:3], maps[3:]), (0, 1, 3)):
            x, img = block(x, img, ws[:, start : start + len(noise) + 1], "none", noise)
    np.testing.assert_array_equal(first, to_uint8(img))


def test_slider_edits_move_only_their_style_layers_in_units_of_ws_spread(sg: StyleGAN2Generator) -> None:
    model = zoo.load("sg")
    base = request_inputs(model, Request("sg", (1,), "ink", 0.7)).latents
    edited = request_inputs(model, Request("sg", (1,), "ink", 0.7, ((0, 2.0),), edit_layers=(1, 2))).latents
    moved = (edited - base)[0]
    assert torch.equal(moved[[0, 3, 4, 5]], torch.zeros(4, 5))  # layers outside 1-2 keep their styles
    step = directions.load_or_compute(model, "sefa", (1, 2))[0]
    torch.testing.assert_close(moved[1:3], 2.0 * step.expand(2, -1), atol=1e-6, rtol=0)
    # One slider unit is one standard deviation of w along the direction, over many seeds.
    w = mapped(sg, list(range(2000)), 0) * 0.5 + mapped(sg, list(range(2000)), 1) * 0.5
    unit = step / step.norm()
    assert abs(float(((w - w.mean(0)) @ unit).std()) / float(step.norm()) - 1) < 0.15
    # SeFa on layers 1-2 factorises the affines that read them alone (4x4's ToRGB reads layer 1, as the
    # 8x8 block's first conv does): the top eigenvector of their weights.
    affines = [sg.synthesis.b4.torgb.affine.weight, sg.synthesis.b8.conv0.affine.weight,
               sg.synthesis.b8.conv1.affine.weight]
    a = torch.cat(affines).t().detach().double()
    top = torch.linalg.eigh(a @ a.T).eigenvectors[:, -1].float()
    assert abs(float(unit @ top)) > 1 - 1e-5
    with pytest.raises(ValueError, match="within 0-5"):
        request_inputs(model, Request("sg", (1,), edits=((0, 1.0),), edit_layers=(4, 9)))


def test_slider_strips_move_the_layer_range_and_keep_the_noise(sg: StyleGAN2Generator) -> None:
    model = zoo.load("sg")
    request = Request("sg", (2,), "rust", 0.9, ((1, 1.0),), "pca", (0, 1), (6, 4, 5), noise_seed=3)
    own = request_inputs(model, request)
    strips = strip_inputs(model, request, 2, (-1.0, 1.0))
    assert strips.latents.shape == (4, 6, 5) and strips.noise_seeds == (3, 3, 3, 3)
    torch.testing.assert_close(strips.latents[3], own.latents[0], atol=1e-6, rtol=0)  # slider 1 at its own 1.0
    assert torch.equal(strips.latents[:, 2:], own.latents[:, 2:].expand(4, -1, -1))  # mixed layers untouched


def test_a_recipe_with_style_controls_replays_to_the_same_pixels_and_a_dcgan_recipe_is_unchanged(
        sg: StyleGAN2Generator, tiny: str) -> None:
    model = zoo.load("sg")
    made = recipe.Recipe("sg", model.weights_sha256, 4, {"rust": 1.0}, 0.7, "pca", {0: 1.5}, (0, 2), 9, (3, 5), 11)
    again = recipe.Recipe.from_json(made.to_json())
    assert again == made
    with Engine("cpu") as engine:
        first = engine.generate(recipe.request_for(made))
        replayed = engine.generate(recipe.request_for(again))
        without_mix = engine.generate(recipe.request_for(recipe.Recipe("sg", model.weights_sha256, 4, {"rust": 1.0},
                                                                      0.7, "pca", {0: 1.5}, (0, 2), noise_seed=11)))
    np.testing.assert_array_equal(first, replayed)
    assert not np.array_equal(first, without_mix)
    plain = recipe.Recipe(tiny, "", 3).to_json()
    assert not any(key in plain for key in recipe.STYLE_FIELDS)  # DCGAN recipes read as they always did
    for change, words in (({"mix_layers": None}, "both a seed and its layers"),
                          ({"mix_layers": [2, 1]}, "first <= last"), ({"edit_layers": [0, 99]}, "< 64"),
                          ({"noise_seed": -1}, "seed")):
        with pytest.raises(recipe.RecipeError, match=words):
            recipe.Recipe.from_json(json.dumps({**json.loads(made.to_json()), **change}))


def test_a_dcgan_refuses_style_controls_in_words(tiny: str) -> None:
    model = zoo.load(tiny)
    for request in (Request(tiny, (1,), mix=(2, 0, 1)), Request(tiny, (1,), noise_seed=4),
                    Request(tiny, (1,), edits=((0, 1.0),), edit_layers=(0, 0))):
        with pytest.raises(ValueError, match="has no style layers"):
            request_inputs(model, request)


def test_an_animation_walks_w_in_straight_lines_through_the_keyframes_styles(sg: StyleGAN2Generator) -> None:
    model = zoo.load("sg")
    keys = [recipe.Recipe("sg", model.weights_sha256, 1, {"ink": 1.0}, 0.8, mix_seed=5, mix_layers=(0, 1)),
            recipe.Recipe("sg", model.weights_sha256, 2, {"rust": 1.0}, 0.6, edits={0: 2.0}, edit_layers=(3, 5))]
    with Engine("cpu") as engine:
        styles, c = animation.keyframe_inputs(engine, keys)
        z, _ = animation.frame_inputs(styles, c, animation.PathOptions(4, "slerp", "linear"))
        frames = list(animation.draw_frames(engine, keys, animation.PathOptions(4, "slerp", "linear", loop=True)))
        key_images = [engine.generate(recipe.request_for(k))[0] for k in keys]
    assert c is None and styles.shape == (2, 6, 5)
    torch.testing.assert_close(z[2], (styles[0] + styles[1]) / 2, atol=1e-6, rtol=0)  # lerp, even asked for slerp
    np.testing.assert_array_equal(frames[0], key_images[0])
    np.testing.assert_array_equal(frames[4], key_images[1])
    np.testing.assert_array_equal(frames[2], drawn(sg, ((styles[0] + styles[1]) / 2)[None])[0])


@pytest.mark.slow
def test_import_then_generate_with_truncation_and_mixing_from_the_command_line(home: Path, tmp_path: Path,
                                                                              tiny: str) -> None:
    g, _ = write_snapshot(tmp_path / "network-snapshot-000100.pkl")
    assert run_cli("import", str(tmp_path / "network-snapshot-000100.pkl"), "--name", "m", home=home).returncode == 0
    out = tmp_path / "D"
    result = run_cli("generate", "--model", "m", "--seeds", "0-3", "--truncation", "0.7", "--mix", "5:0-3",
                     "--out-dir", str(out), home=home)
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        ws = g.mapping(latent.seed_latents(range(4), 8), None, truncation_psi=0.7)
        ws[:, :4] = g.mapping(latent.seed_latents([5], 8), None, truncation_psi=0.7)[:, :4]
        expected = to_uint8(g.synthesis(ws))
    files = sorted(out.glob("seed*.png"))
    for path, want in zip(files, expected):  # channels_last may move a value by one level, no more
        assert np.abs(np.asarray(Image.open(path).convert("RGB")).astype(int) - want.astype(int)).max() <= 1
    made = recipe.read_recipe(files[2])
    assert (made.seed, made.truncation, made.mix_seed, made.mix_layers) == (2, 0.7, 5, (0, 3))
    again = run_cli("generate", "--recipe", str(files[2]), "--out", str(tmp_path / "again.png"), home=home)
    assert again.returncode == 0, again.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), np.asarray(Image.open(files[2])))
    for args, words in ((["--model", "m", "--mix", "5:2-9"], "within 0-"), (["--model", "m", "--mix", "5"], "SEED:FIRST-LAST"),
                        (["--model", tiny, "--mix", "5:0-1"], "has no style layers")):
        refused = run_cli("generate", *args, "--seeds", "1", "--out", str(tmp_path / "no.png"), home=home)
        assert refused.returncode == 2 and words in refused.stderr and not (tmp_path / "no.png").exists()
