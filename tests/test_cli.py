"""The command line, run as a user runs it: python -m studio ... in a subprocess."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio import zoo
from studio.latent import seed_latents
from studio.media import to_uint8
from studio.recipe import read_recipe
from tests.conftest import package_reference_generator, run_cli


@pytest.mark.slow
def test_generate_writes_one_faithful_png_per_seed(eyes_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "eyes"
    result = run_cli("generate", "--model", "omniart-eyes", "--seeds", "0-7", "--class", "blue", "--out-dir",
                     str(out), home=eyes_home)
    assert result.returncode == 0, result.stderr
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"seed{s:04d}.png" for s in range(8)]
    images = np.stack([np.asarray(Image.open(f)) for f in files])
    assert images.shape == (8, 128, 128, 3)
    assert len({img.tobytes() for img in images}) == 8

    onehot = torch.zeros(8, 8)
    onehot[:, 1] = 1  # blue
    with torch.no_grad():
        expected = to_uint8(package_reference_generator()(torch.cat([seed_latents(range(8), 100), onehot], 1)[:, :, None, None]))
    assert np.abs(images.astype(int) - expected).max() <= 2


def test_generate_grid_and_folder_together(tiny_home: Path, tmp_path: Path) -> None:
    result = run_cli("generate", "--model", "tiny", "--seeds", "1,5,9,3-4", "--class", "fox", "--truncation", "0.7",
                     "--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "d"), "--cols", "5",
                     home=tiny_home)
    assert result.returncode == 0, result.stderr
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (32, 5 * 32 + 4 * 2, 3)  # one row of five 32px tiles with 2px gaps
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == ["seed0001.png", "seed0003.png", "seed0004.png", "seed0005.png", "seed0009.png"]
    tile0 = grid[:, :32]
    assert np.array_equal(tile0, np.asarray(Image.open(tmp_path / "d" / "seed0001.png")))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--seeds", "9-3"], "end is below the start"),
        (["--seeds", "x"], "bad seed"),
        (["--class", "purple"], "unknown class 'purple'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_home: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("generate", "--model", "tiny", *args, "--out", str(tmp_path / "x.png"), home=tiny_home)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_models_lists_resolution_classes_and_licence(tiny_home: Path) -> None:
    result = run_cli("models", home=tiny_home)
    assert result.returncode == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {*zoo.BUILTIN, "tiny"}
    assert "128x128" in rows["omniart-eyes"] and "hazel" in rows["omniart-eyes"] and "mit" in rows["omniart-eyes"]
    assert "32x32" in rows["tiny"] and "cat,dog,fox" in rows["tiny"]


@pytest.mark.parametrize("command", [[], ["generate"], ["models"], ["serve"]])
def test_every_command_has_help(command: list[str], tmp_path: Path) -> None:
    result = run_cli(*command, "--help", home=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m studio")


def test_edits_blends_and_recipes_regenerate_exactly(tiny_home: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    made = run_cli("generate", "--model", "tiny", "--seeds", "5", "--blend", "cat=0.6,fox=0.4", "--edit", "0=3,2=-2",
                   "--directions", "pca", "--out", str(a), home=tiny_home)
    assert made.returncode == 0, made.stderr
    plain = run_cli("generate", "--model", "tiny", "--seeds", "5", "--blend", "cat=0.6,fox=0.4", "--out",
                    str(tmp_path / "plain.png"), home=tiny_home)
    assert plain.returncode == 0
    assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(tmp_path / "plain.png")))

    again = run_cli("generate", "--recipe", str(a), "--out", str(b), home=tiny_home)
    assert again.returncode == 0, again.stderr
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    recipe = read_recipe(b)
    assert (recipe.seed, recipe.classes, recipe.edits, recipe.directions) == (5, {"cat": 0.6, "fox": 0.4},
                                                                              {0: 3.0, 2: -2.0}, "pca")
    (tmp_path / "r.json").write_text(recipe.to_json())
    from_json = run_cli("generate", "--recipe", str(tmp_path / "r.json"), "--out", str(tmp_path / "c.png"),
                        home=tiny_home)
    assert from_json.returncode == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(tmp_path / "c.png")))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--edit", "0=x"], "bad edit '0=x'"),
        (["--edit", "99=1"], "direction 99 does not exist"),
        (["--blend", "cat=0.5,owl=0.5"], "unknown class 'owl'"),
        (["--blend", "cat"], "bad blend 'cat'"),
        (["--class", "cat", "--blend", "cat=1"], "either --class or --blend"),
        (["--recipe", "missing.png"], "cannot read missing.png"),
    ],
)
def test_bad_edits_blends_and_recipes_exit_2(tiny_home: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("generate", "--model", "tiny", "--seeds", "1", *args, "--out", str(tmp_path / "x.png"),
                     home=tiny_home)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
