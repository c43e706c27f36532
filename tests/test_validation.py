"""Careless and hostile input: numbers that are not finite or out of range, oversized or deeply nested
recipes, over-long model names, and model files whose pickles would run code.

Each is refused in words (the command line: one line on stderr, exit 2; the studio: an error message)
before any model runs, and the studio keeps working.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import uuid
from dataclasses import replace
from pathlib import Path

import gradio as gr
import httpx
import pytest
import torch
from gradio_client import Client
from PIL import Image, PngImagePlugin

from studio import zoo
from studio.__main__ import main
from studio.engine import Request
from studio.models.convert import ConversionError
from studio.models.convert.pytorch_file import load_weights_only
from studio.recipe import MAX_RECIPE_BYTES, PNG_KEY, Recipe, RecipeError, read_recipe
from studio.ui.controls import MAX_CLASSES, MAX_SLIDERS, Controls
from tests.conftest import run_cli

VALID = Recipe("tiny", "ab" * 32, 7, {"cat": 0.5, "dog": 0.5}, 0.8, "sefa", {0: 2.0, 3: -1.5})
LONG_NAME = "a" * 300


def json_with(recipe: Recipe, field: str, raw: str) -> str:
    """``recipe``'s JSON with ``field``'s value replaced by the raw JSON text ``raw`` (which may be no strict JSON)."""
    d = json.loads(recipe.to_json())
    d[field] = "<raw>"
    return json.dumps(d).replace('"<raw>"', raw)


# -- recipes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [({"truncation": math.nan}, "truncation (psi) must be a finite number from 0 to 1.5, not nan"),
     ({"truncation": math.inf}, "truncation (psi) must be a finite number from 0 to 1.5, not inf"),
     ({"truncation": 1.6}, "not 1.6"), ({"truncation": -0.1}, "not -0.1"), ({"truncation": "1"}, "not '1'"),
     ({"classes": {"cat": math.nan}}, "the weight of class 'cat' must be a finite number from 0 to 1000, not nan"),
     ({"classes": {"cat": math.inf}}, "the weight of class 'cat' must be a finite number"),
     ({"classes": {"cat": -0.5}}, "not -0.5"),
     ({"edits": {0: math.nan}}, "slider 0 must be a finite number from -5 to 5, not nan"),
     ({"edits": {4: -math.inf}}, "slider 4 must be a finite number from -5 to 5, not -inf"),
     ({"edits": {1: 5.5}}, "not 5.5"), ({"edits": {-1: 1.0}}, "slider numbers are whole numbers from 0"),
     ({"seed": 2**32}, "out of range"), ({"seed": math.nan}, "not a whole number"),
     ({"model": LONG_NAME}, "a model name is 1 to 96 characters"), ({"model": ""}, "1 to 96 characters"),
     ({"directions": "up"}, "unknown directions 'up'"), ({"weights_sha256": "abc"}, "64 hex digits")],
)
def test_recipes_refuse_values_no_image_can_be_drawn_from(change: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(message)):
        replace(VALID, **change)


def test_recipe_bounds_themselves_are_accepted() -> None:
    edge = replace(VALID, truncation=1.5, classes={"cat": 0.0, "dog": 1000.0}, edits={0: -5.0, 19: 5.0})
    assert Recipe.from_json(edge.to_json()) == edge


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [("truncation", "NaN", "NaN is not a number a recipe may hold"),
     ("truncation", "Infinity", "Infinity is not a number a recipe may hold"),
     ("truncation", "1e400", "truncation (psi) must be a finite number"),  # parses as infinity
     ("classes", '{"cat": -Infinity}', "-Infinity is not a number"),
     ("edits", '{"0": 1e999}', "slider 0 must be a finite number"),
     ("seed", "9" * 5000, "not JSON"),  # Python refuses to convert integers this long
     ("classes", '{"cat": "0.5"}', "the weight of class 'cat' must be a finite number")],
)
def test_json_recipes_with_non_finite_numbers_are_refused(field: str, raw: str, message: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(message)):
        Recipe.from_json(json_with(VALID, field, raw))


def test_to_json_never_writes_nan() -> None:
    broken = replace(VALID)
    object.__setattr__(broken, "truncation", math.nan)  # what __post_init__ refuses, forced in
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        broken.to_json()


def test_oversized_and_deeply_nested_recipes_are_refused_before_parsing(tmp_path: Path) -> None:
    deepest = "[" * 100_000 + "]" * 100_000  # json.loads would overflow the stack on it
    with pytest.raises(RecipeError, match="200000 bytes is over the 64 KB a recipe may take"):
        Recipe.from_json(deepest)
    (tmp_path / "deep.json").write_text(deepest)
    with pytest.raises(RecipeError, match="over the 64 KB"):
        read_recipe(tmp_path / "deep.json")
    deep = json_with(VALID, "edits", "[" * 20_000 + "]" * 20_000)  # within the size cap
    assert len(deep) < MAX_RECIPE_BYTES
    with pytest.raises(RecipeError, match="nests deeper than 8 levels"):
        Recipe.from_json(deep)
    with pytest.raises(RecipeError, match="nests deeper than 8 levels"):
        read_recipe(deep.encode())
    padded = VALID.to_json() + " " * MAX_RECIPE_BYTES  # valid JSON, but no recipe is this large
    with pytest.raises(RecipeError, match="over the 64 KB"):
        Recipe.from_json(padded)


@pytest.mark.parametrize(
    "text",
    ['"' + '\\"' * 30_000, '"' * 60_000, ('"' + '\\"') * 20_000 + "\\", "{" + '"a": ' * 10_000 + "1}"],
    ids=["escaped-quotes", "quotes", "trailing-backslash", "colons"],
)
def test_garbage_just_under_the_size_cap_is_refused_as_not_json(text: str) -> None:
    # One scan of each text; a pattern for JSON strings took minutes on the first (quadratic).
    with pytest.raises(RecipeError, match="not a recipe: the text is not JSON"):
        Recipe.from_json(text)


def test_missing_fields_are_named_once() -> None:
    with pytest.raises(RecipeError, match=r"^invalid recipe: missing 'model'$"):
        Recipe.from_json('{"format": "gan-studio-recipe/1"}')


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    recipe = replace(VALID, classes={"[[[[[{{{{{ \"quoted\" \\": 1.0})
    assert Recipe.from_json(recipe.to_json()) == recipe


# -- recipes in PNGs ---------------------------------------------------------------------------------


def png_bytes(add_chunk) -> bytes:
    """A small PNG whose text chunks ``add_chunk(info)`` sets."""
    info = PngImagePlugin.PngInfo()
    add_chunk(info)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


@pytest.mark.parametrize(
    "add_chunk",
    [lambda i: i.add_itxt(PNG_KEY, VALID.to_json()), lambda i: i.add_itxt(PNG_KEY, VALID.to_json(), zip=True),
     lambda i: i.add_text(PNG_KEY, VALID.to_json()), lambda i: i.add_text(PNG_KEY, VALID.to_json(), zip=True)],
    ids=["iTXt", "iTXt-compressed", "tEXt", "zTXt"],
)
def test_recipe_chunks_of_every_text_kind_are_read(add_chunk) -> None:
    data = png_bytes(lambda i: (i.add_text("Software", "other tool"), add_chunk(i)))
    assert read_recipe(data) == VALID


def test_recipe_chunks_over_the_cap_are_refused_unread() -> None:
    huge = png_bytes(lambda i: i.add_itxt(PNG_KEY, VALID.to_json() + " " * 500_000))  # valid JSON, 500 KB
    with pytest.raises(RecipeError, match=r"the PNG's recipe takes \d+ bytes, over the 64 KB"):
        read_recipe(huge)
    bomb = png_bytes(lambda i: i.add_itxt(PNG_KEY, VALID.to_json() + " " * 20_000_000, zip=True))
    assert len(bomb) < 100_000  # 20 MB of text in a few KB
    with pytest.raises(RecipeError, match="over the 64 KB"):
        read_recipe(bomb)


def test_a_damaged_recipe_chunk_is_refused() -> None:
    data = bytearray(png_bytes(lambda i: i.add_itxt(PNG_KEY, VALID.to_json())))
    at = data.index(b'"seed"')
    data[at + 1] = ord("S")  # the checksum no longer matches
    with pytest.raises(RecipeError, match="its recipe chunk is damaged"):
        read_recipe(bytes(data))


# -- latents and engine requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"truncation": math.nan}, "truncation (psi) must be a finite number"),
     ({"classes": {"cat": math.inf}}, "the weight of class 'cat' must be a finite number"),
     ({"edits": ((0, math.nan),)}, "slider 0 must be a finite number"),
     ({"z": torch.tensor([[0.0] * 15 + [math.nan]])}, "latents must be finite numbers"),
     ({"z": torch.zeros(1, 16), "c": torch.tensor([[math.inf, 0.0, 0.0]])}, "class vectors must be finite numbers")],
)
def test_engine_requests_with_non_finite_numbers_are_refused_in_words(kwargs: dict, message: str) -> None:
    seeds = () if "z" in kwargs else (1,)
    with pytest.raises(ValueError, match=re.escape(message)):
        Request("tiny", seeds, **kwargs)


# -- the Explore controls ----------------------------------------------------------------------------


def explore_values(model: str = "tiny", seed: object = 5, truncation: object = 0.8, blend: dict | None = None,
                   sliders: dict | None = None, class_name: str = "dog") -> tuple:
    """The Explore controls' values in ``Controls.inputs`` order; ``blend`` and ``sliders`` by index, the
    StyleGAN controls, the bends and the base <-> fine-tuned slider as a fresh page has them."""
    weights = [(blend or {}).get(i, 0.0) for i in range(MAX_CLASSES)]
    moves = [(sliders or {}).get(i, 0.0) for i in range(MAX_SLIDERS)]
    style = (None, 0, 0, None, 0, 0)  # StyleGAN controls: no mixing, constant noise, sliders on every layer
    return (model, seed, bool(blend), class_name, *weights, truncation, "sefa", *moves, *style, "", 1.0)


@pytest.fixture
def controls() -> Controls:
    return Controls(gr.Dropdown(), gr.Number(), gr.Checkbox(), gr.Dropdown(),
                    [gr.Slider(0, 1) for _ in range(MAX_CLASSES)], gr.Slider(0, 1.5), gr.Radio(["sefa", "pca"]),
                    [gr.Slider(-5, 5) for _ in range(MAX_SLIDERS)],
                    [gr.Number(), gr.Slider(0, 17), gr.Slider(0, 17), gr.Number(), gr.Slider(0, 17), gr.Slider(0, 17)],
                    gr.Textbox(), gr.Slider(0, 1))


@pytest.mark.parametrize(
    ("values", "message"),
    [(explore_values(truncation=math.nan), "truncation (psi) must be a finite number from 0 to 1.5, not nan"),
     (explore_values(truncation=None), "truncation (psi) must be a finite number"),
     (explore_values(blend={0: math.inf, 1: 0.5}), "the weight of class 'cat' must be a finite number"),
     (explore_values(sliders={2: math.nan}), "slider 2 must be a finite number from -5 to 5, not nan"),
     (explore_values(seed=math.nan), "seed nan is not a whole number"),
     (explore_values(model=LONG_NAME), "model names are at most 96 characters; this one has 300"),
     (explore_values(model=None), "Pick a model")],
)
def test_explore_controls_refuse_values_in_words(tiny: str, controls: Controls, values: tuple, message: str) -> None:
    with pytest.raises(gr.Error, match=re.escape(message)):
        controls.recipe(values)


def test_explore_controls_make_the_recipe_they_show(tiny: str, controls: Controls) -> None:
    recipe = controls.recipe(explore_values(blend={0: 0.25, 2: 0.75}, sliders={1: -2.5}))
    assert recipe == Recipe("tiny", "", 5, {"cat": 0.25, "fox": 0.75}, 0.8, "sefa", {1: -2.5})


# -- model names -------------------------------------------------------------------------------------


def test_over_long_model_names_are_no_model_and_say_the_limit(tiny_home: Path) -> None:
    (tiny_home / "hub").mkdir()
    for name in (LONG_NAME, f"someone/{LONG_NAME}"):
        assert zoo.folder_for(name) is None
        with pytest.raises(zoo.ModelUnavailable, match=f"model names are at most 96 characters; this one has {len(name)}"):
            zoo.model_config(name)
        with pytest.raises(zoo.ModelUnavailable, match="at most 96 characters"):
            zoo.load(name)
    assert zoo.folder_for("a" * 96) == tiny_home / "models" / ("a" * 96)


def cli_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run the command line in-process; assert it refused with one line and exit status 2; that line."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["generate", "--truncation", "nan"], "truncation (psi) must be a finite number from 0 to 1.5, not nan"),
     (["generate", "--truncation", "inf"], "not inf"), (["generate", "--truncation", "3"], "not 3.0"),
     (["generate", "--blend", "cat=inf,dog=1"], "the weight of class 'cat' must be a finite number"),
     (["generate", "--blend", "cat=nan"], "the weight of class 'cat' must be a finite number"),
     (["generate", "--edit", "0=nan"], "slider 0 must be a finite number from -5 to 5, not nan"),
     (["generate", "--edit", "1=-inf"], "slider 1 must be a finite number"),
     (["interpolate", "--seeds", "1,2", "--truncation", "nan"], "truncation (psi) must be a finite number"),
     (["interpolate", "--seeds", "1,2", "--edit", "0=inf"], "slider 0 must be a finite number"),
     (["interpolate", "--seeds", "1,2", "--fps", "nan"], "fps must be from 1 to 60, not nan")],
)
def test_cli_refuses_numbers_that_are_not_finite(tiny_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  argv: list[str], message: str) -> None:
    out = tmp_path / ("a.gif" if argv[0] == "interpolate" else "a.png")
    assert message in cli_error(capsys, *argv, "--model", "tiny", "--out", str(out))
    assert not out.exists()


def test_cli_refuses_over_long_model_names_in_words(tiny_home: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    limit = "model names are at most 96 characters; this one has 300"
    assert limit in cli_error(capsys, "generate", "--model", LONG_NAME, "--out", str(tmp_path / "a.png"))
    assert limit in cli_error(capsys, "interpolate", "--model", LONG_NAME, "--seeds", "1,2", "--out",
                              str(tmp_path / "a.gif"))
    assert limit in cli_error(capsys, "metrics", "--model", LONG_NAME, "--data", "none")
    assert limit in cli_error(capsys, "push", LONG_NAME, "--repo", "someone/tiny", "--dry-run", "--out",
                              str(tmp_path / "upload"))
    weights = tmp_path / "g.pth"
    torch.save({}, weights)
    refused = cli_error(capsys, "import", str(weights), "--name", LONG_NAME, "--resolution", "32")
    assert ("a name of 300 characters is not a usable model name: use letters, digits, '.', '_' and '-', at most 96 "
            "characters") in refused
    assert sorted(p.name for p in (tiny_home / "models").iterdir()) == ["tiny"]


# -- pickles that would run code -----------------------------------------------------------------------


class RunsCode:
    """An object whose unpickling runs a shell command: what a hostile model file carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.slow
def test_model_files_that_would_run_code_are_refused_in_the_studios_words(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "the-pickle-ran"
    torch_file, plain_pickle = tmp_path / "generator.pth", tmp_path / "generator.pkl.pth"
    torch.save({"main.0.weight": torch.zeros(2), "hook": RunsCode(marker)}, torch_file)
    with open(plain_pickle, "wb") as f:
        pickle.dump({"main.0.weight": RunsCode(marker)}, f, protocol=4)
    # A plain pickle is read as an NVIDIA snapshot (issue 12), whose reader names the refused call too.
    for path, refused in ((torch_file, "was refused: it asks to import and call posix.system"),
                          (plain_pickle, "was refused: it asks to import and call posix.system")):
        result = run_cli("import", str(path), "--name", "evil", "--resolution", "32", home=home)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1, result.stderr  # no traceback, no warning from torch
        assert result.stderr.startswith(f"error: {path} {refused}")
        assert "never runs code from a model file" in result.stderr
        assert "weights_only" not in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    assert not (home / "models" / "evil").exists()


def test_built_in_weights_that_would_run_code_are_refused_in_the_studios_words(tmp_path: Path) -> None:
    marker = tmp_path / "the-pickle-ran"
    buf = io.BytesIO()
    torch.save({"netG_state_dict": RunsCode(marker)}, buf)  # as a tampered digiface download would be
    with pytest.raises(ConversionError, match="^the digiface-faces weights was refused: ") as refused:
        load_weights_only(io.BytesIO(buf.getvalue()), "the digiface-faces weights")
    message = str(refused.value)
    assert message.startswith("the digiface-faces weights was refused: it asks to import and call ")
    assert "system" in message and "weights_only" not in message and "\n" not in message
    assert not marker.exists()


# -- through the launched studio ---------------------------------------------------------------------


def queue_call(url: str, api_name: str, data: list) -> dict:
    """Call any event, private ones too, the way a hand-written client can: through the raw queue API.

    Returns:
        The event's ``process_completed`` message.
    """
    config = httpx.get(f"{url}config", timeout=30).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d["api_name"] == api_name)
    session = uuid.uuid4().hex
    api = f"{url}gradio_api"
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session})  # NaN stays NaN
    joined = httpx.post(f"{api}/queue/join", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", f"{api}/queue/data", params={"session_hash": session}, timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and (message := json.loads(line[5:]))["msg"] == "process_completed":
                return message
    raise AssertionError("the queue closed before the event completed")


@pytest.mark.slow
def test_the_draw_api_refuses_bad_recipes_in_words_and_keeps_drawing(studio_url: str) -> None:
    client = Client(studio_url, verbose=False)
    good = Recipe("omniart-eyes", "", 3, {"blue": 1.0}, 0.8)
    bad = [(json_with(good, "truncation", "NaN"), "NaN is not a number a recipe may hold"),
           (json_with(good, "truncation", "1e400"), "truncation (psi) must be a finite number"),
           (json_with(good, "classes", '{"blue": Infinity}'), "Infinity is not a number a recipe may hold"),
           (json_with(good, "edits", '{"0": -1e999}'), "slider 0 must be a finite number"),
           ("[" * 100_000 + "]" * 100_000, "over the 64 KB a recipe may take"),
           (json_with(good, "edits", "[" * 20_000 + "]" * 20_000), "nests deeper than 8 levels"),
           (json_with(good, "model", json.dumps(LONG_NAME)), "a model name is 1 to 96 characters")]
    for text, message in bad:
        with pytest.raises(Exception, match=re.escape(message)):
            client.predict(text, api_name="/draw")
    image_path, recipe_json = client.predict(good.to_json(), api_name="/draw")
    assert Recipe.from_json(recipe_json).seed == 3 and Image.open(image_path).size == (128, 128)


@pytest.mark.slow
def test_private_explore_events_refuse_bad_values_in_words(studio_url: str) -> None:
    picked = queue_call(studio_url, "on_model", [LONG_NAME, "sefa"])
    assert not picked["success"]
    assert picked["output"]["error"] == "model names are at most 96 characters; this one has 300"
    found = [""]  # the recipe event's last input: the found latent of "Start from an image" (none)
    drawn = queue_call(studio_url, "to_recipe_1",
                       [*explore_values(model="omniart-eyes", class_name="blue", truncation=math.nan), *found])
    assert not drawn["success"]
    assert drawn["output"]["error"] == "truncation (psi) must be a finite number from 0 to 1.5, not nan"
    fine = queue_call(studio_url, "to_recipe_1", [*explore_values(model="omniart-eyes", class_name="blue"), *found])
    assert fine["success"] and Recipe.from_json(fine["output"]["data"][0]) == Recipe("omniart-eyes", "", 5,
                                                                                      {"blue": 1.0}, 0.8)
