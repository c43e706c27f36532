"""Blending two models: parents exactly at alpha 0 and 1, the midpoint at 0.5, layer ranges that touch only
their blocks, the lineage, and refusals that write nothing; through the command line as an artist runs it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from studio import zoo
from studio.__main__ import main
from studio.models.folder import CONFIG_FILE, WEIGHTS_FILE, load_config, save_pretrained
from tests.conftest import make_tiny_model
from tests.test_style_controls import save_style_model


def weights(home: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(home / "models" / name / WEIGHTS_FILE))


def blend(*args: str) -> int:
    return main(["blend", *args])


@pytest.fixture
def parents(home: Path) -> tuple[str, str]:
    """Two tiny DCGANs of one size and classes, with different weights and batch-norm statistics."""
    make_tiny_model(home, "a", seed=0)
    make_tiny_model(home, "b", seed=1)
    return "a", "b"


@pytest.fixture
def style_parents(home: Path) -> tuple[str, str]:
    """A tiny StyleGAN2 and a copy of it with every weight and buffer moved (as a fine-tune from it would)."""
    g = save_style_model(home, "sa")
    torch.manual_seed(7)
    with torch.no_grad():
        for name, tensor in [*g.named_parameters(), *g.named_buffers()]:
            if "resample_filter" not in name:  # a fixed filter: the same in every model of the family
                tensor.add_(0.1 * torch.randn_like(tensor))
    save_pretrained(home / "models" / "sb", zoo.model_config("sa"), g)
    return "sa", "sb"


def drawn(home: Path, model: str, tmp_path: Path) -> list[np.ndarray]:
    """The pixels ``python -m studio generate`` writes for seeds 0-3 of ``model``."""
    out = tmp_path / f"drawn-{model}"
    classes = ["--class", zoo.model_config(model).class_names[0]]
    assert main(["generate", "--model", model, "--seeds", "0-3", *classes, "--out-dir", str(out)]) == 0
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(out.glob("*.png"))]


@pytest.mark.parametrize("kind", ["dcgan", pytest.param("stylegan2", marks=pytest.mark.slow)])
def test_alpha_0_and_1_give_the_parents_to_the_bit(kind: str, home: Path, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    a, b = request.getfixturevalue("parents" if kind == "dcgan" else "style_parents")
    for alpha, parent, layers in [("0", a, []), ("1", b, []), ("0", a, ["--layers", "1-2"])]:
        child = f"child-{alpha}-{len(layers)}"
        assert blend(a, b, "--alpha", alpha, *layers, "--out", child) == 0
        expected, got = weights(home, parent), weights(home, child)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), child
        assert all(np.array_equal(x, y) for x, y in zip(drawn(home, parent, tmp_path), drawn(home, child, tmp_path)))


def test_alpha_half_is_the_midpoint_of_every_tensor(parents: tuple[str, str], home: Path) -> None:
    assert blend(*parents, "--alpha", "0.5", "--out", "mid") == 0
    a, b, mid = weights(home, "a"), weights(home, "b"), weights(home, "mid")
    floats = [k for k in a if a[k].is_floating_point()]
    assert any("running_var" in k for k in floats)  # batch-norm statistics blend too
    assert sum(not torch.equal(a[k], b[k]) for k in floats) > 5
    for key in floats:
        torch.testing.assert_close(mid[key], (a[key] + b[key]) / 2, rtol=0, atol=1e-6)
    counters = [k for k in a if not a[k].is_floating_point()]
    assert counters and all(torch.equal(mid[k], b[k]) for k in counters)  # from the nearer parent: B from 0.5 on


def test_a_layer_range_blends_only_those_blocks(style_parents: tuple[str, str], home: Path) -> None:
    assert blend(*style_parents, "--alpha", "0.25", "--layers", "1-1", "--out", "b8-only") == 0
    a, b, child = weights(home, "sa"), weights(home, "sb"), weights(home, "b8-only")
    changed = {k for k in a if not torch.equal(a[k], child[k])}
    # Block 1 is the 8 px synthesis block: every tensor of it that differs between the parents, nothing else.
    assert changed == {k for k in a if k.startswith("synthesis.b8.") and not torch.equal(a[k], b[k])}
    assert any("noise_const" in k for k in changed) and any(".torgb." in k for k in changed)
    for key in changed:
        torch.testing.assert_close(child[key], a[key] + 0.25 * (b[key] - a[key]), rtol=0, atol=1e-6)
    assert not any(k.startswith("mapping.") for k in changed)  # the base's mapping and w_avg, as in toonification


def test_a_dcgan_layer_range_leaves_to_rgb_to_parent_a(parents: tuple[str, str], home: Path) -> None:
    assert blend(*parents, "--alpha", "1", "--layers", "0-2", "--out", "swapped") == 0
    a, b, child = weights(home, "a"), weights(home, "b"), weights(home, "swapped")
    assert not torch.equal(a["to_rgb.0.weight"], b["to_rgb.0.weight"])
    assert all(torch.equal(child[k], a[k] if k.startswith("to_rgb.") else b[k]) for k in a)


def test_the_lineage_names_both_parents_alpha_and_layers(parents: tuple[str, str], home: Path) -> None:
    assert blend(*parents, "--alpha", "0.3", "--layers", "1-2", "--out", "child") == 0
    config = load_config(home / "models" / "child")
    assert config.lineage["blend"] == {
        "parents": [{"name": n, "weights_sha256": zoo.load(n).weights_sha256} for n in parents],
        "alpha": 0.3, "layers": [1, 2]}
    assert config.class_names == zoo.model_config("a").class_names and config.title == "child"
    assert "child" in zoo.model_names()


def refused(home: Path, capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run ``blend ARGS``: it must exit 2 with one line on stderr and leave the models folder as it was."""
    before = sorted(p.name for p in (home / "models").iterdir())
    capsys.readouterr()
    assert blend(*args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert sorted(p.name for p in (home / "models").iterdir()) == before
    return err


def test_refusals_exit_2_in_one_line_and_write_nothing(parents: tuple[str, str], home: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    save_style_model(home, "sg")
    make_tiny_model(home, "wide", resolution=64)
    make_tiny_model(home, "two", num_classes=2)
    renamed = replace(zoo.model_config("a"), class_names=("cat", "fox", "dog"))
    save_pretrained(home / "models" / "renamed", renamed, zoo.load("a").generator)
    cases = {
        ("a", "sg", "--alpha", "0.5", "--out", "x"): "a is a dcgan and sg a stylegan2",
        ("a", "wide", "--alpha", "0.5", "--out", "x"): "differ in shape (resolution 32 against 64)",
        ("a", "two", "--alpha", "0.5", "--out", "x"): "differ in shape (num_classes 3 against 2)",
        ("a", "renamed", "--alpha", "0.5", "--out", "x"): "different classes (cat, dog, fox against cat, fox, dog)",
        ("a", "nope", "--alpha", "0.5", "--out", "x"): "unknown model 'nope'",
        ("a", "b", "--alpha", "1.5", "--out", "x"): "alpha must be a number from 0 (parent A) to 1 (parent B), not 1.5",
        ("a", "b", "--alpha", "nan", "--out", "x"): "not nan",
        ("a", "b", "--alpha", "0.5", "--out", "b"): "a model named 'b' exists already",
        ("a", "b", "--alpha", "0.5", "--out", "../x"): "is not a usable model name",
        ("a", "b", "--alpha", "0.5", "--layers", "2-1", "--out", "x"): "generator blocks are 0 (4 px) to 2 (16 px)",
        ("a", "b", "--alpha", "0.5", "--layers", "0-3", "--out", "x"): "generator blocks are 0 (4 px) to 2 (16 px)",
        ("a", "b", "--alpha", "0.5", "--layers", "one", "--out", "x"): "bad layer range 'one'",
    }
    for args, said in cases.items():
        assert said in refused(home, capsys, *args), args
    assert json.loads((home / "models" / "b" / CONFIG_FILE).read_text())["title"] == "Tiny test model"
