"""The Explore tab: models, seeds, classes and blends, truncation, semantic sliders, recipes, history.

Data flow: any control change rebuilds the current recipe (a hidden JSON box, no model work); the
recipe's change draws the main image through the engine, so moving a slider costs exactly one
engine request. Discrete changes and slider releases also refresh the context: the neighbouring
seeds, each slider's preview strip, and the back/forward history.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
import torch

from studio import directions, zoo
from studio.animation import MAX_KEYFRAMES
from studio.engine import Request, request_inputs
from studio.media import grid
from studio.ui.errors import USER_ERRORS
from studio.recipe import Recipe, RecipeError, check_weights, read_recipe, request_for, save_png
from studio.ui.controls import MAX_CLASSES, MAX_SEED, MAX_SLIDERS, METHODS, SLIDER_RANGE, Controls
from studio.ui.scratch import keep_newest, scratch_dir

if TYPE_CHECKING:
    from studio.engine import Engine
    from studio.zoo import LoadedModel

VARIATIONS = 8
DEFAULT_SLIDERS = 8
STRIP_VALUES = (-3.0, 0.0, 3.0)
HISTORY = 50
# The first impression: a painterly eye, with a little truncation for a cleaner image.
DEFAULT_SEED = 2
DEFAULT_TRUNCATION = 0.8



def model_card(name: str) -> str:
    """Markdown describing a model: resolution, classes, licence, author, source."""
    cfg = zoo.model_config(name)
    classes = f"{len(cfg.class_names)} classes" if cfg.class_names else "unconditional"
    licence = cfg.license.upper() if cfg.license else "unknown licence"
    parts = [f"**{cfg.title or name}**", f"{cfg.resolution}×{cfg.resolution}", classes, f"licence {licence}"]
    if cfg.author:
        parts.append(f"by {cfg.author}")
    lines = [" · ".join(parts)]
    if cfg.description:
        lines.append(cfg.description)
    if cfg.source:
        lines.append(f"Source: {cfg.source}")
    if cfg.lineage:
        facts = [f"from **{cfg.lineage.get('base_model', '?')}**", f"data set `{cfg.lineage.get('dataset', '?')}`"]
        if "dataset_images" in cfg.lineage:
            facts.append(f"{cfg.lineage['dataset_images']} images")
        facts.append(f"{cfg.lineage.get('steps', '?')} steps")
        if isinstance(cfg.lineage.get("swd"), (int, float)):
            facts.append(f"SWD {cfg.lineage['swd']:.1f}")
        lines.append("Fine-tuned " + " · ".join(facts))
    return "\n\n".join(lines)


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
            save_png(path, image, recipe)
            self._saved += 1
            if self._saved % 100 == 0:
                self._prune()
        return str(path)

    def _prune(self) -> None:
        keep_newest(self.folder, self.keep, "*.png")


def build_explore_tab(demo: gr.Blocks, engine: Engine, keyframes: gr.State) -> None:
    """Lay out the Explore tab inside ``demo``, wire it to ``engine``; "add as keyframe" feeds ``keyframes``."""
    files = ImageFiles()
    default = zoo.DEFAULT_MODEL
    default_classes = list(zoo.model_config(default).class_names)

    def loaded(name: str) -> LoadedModel:
        try:
            return engine.cache.get(name)
        except zoo.ModelUnavailable as e:
            raise gr.Error(str(e)) from None

    def run(request: Request) -> np.ndarray:
        try:
            return engine.generate(request)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None

    with gr.Row(equal_height=False, elem_id="explore"):
        with gr.Column(scale=1, min_width=280, elem_classes=["panel"]):
            # Custom values pass through so API callers get the zoo's own message for an unknown name.
            model = gr.Dropdown(zoo.model_names(), value=default, label="Model", allow_custom_value=True,
                                elem_id="model-picker")
            info = gr.Markdown(model_card(default), elem_classes=["model-card"])
            with gr.Row(equal_height=True):
                seed = gr.Number(value=DEFAULT_SEED, label="Seed", precision=0, minimum=0, maximum=MAX_SEED,
                                 elem_id="seed", scale=3)
                dice = gr.Button("🎲 Random", elem_id="random-seed", scale=1, min_width=90)
            class_name = gr.Dropdown(default_classes, value=default_classes[0] if default_classes else None,
                                     label="Class", visible=bool(default_classes), allow_custom_value=True,
                                     elem_id="class-picker")
            blend_on = gr.Checkbox(False, label="Blend classes", visible=bool(default_classes), elem_id="blend-on")
            with gr.Group(visible=False, elem_id="blend") as blend_group:
                blend = [gr.Slider(0, 1, value=0.0, step=0.05, label=default_classes[i] if i < len(default_classes)
                                   else f"class {i}", visible=i < len(default_classes), elem_id=f"blend-{i}")
                         for i in range(MAX_CLASSES)]
            truncation = gr.Slider(0.0, 1.5, value=DEFAULT_TRUNCATION, step=0.05, label="Truncation ψ",
                                   info="1 = full variety · 0 = the average image", elem_id="truncation")
            with gr.Row():
                back = gr.Button("◀ Back", size="sm", elem_id="history-back")
                forward = gr.Button("Forward ▶", size="sm", elem_id="history-forward")
            with gr.Row():
                keep = gr.Button("♥ Keep", size="sm", elem_id="keep")
                add_key = gr.Button("➕ Add as keyframe", size="sm", elem_id="add-keyframe")
            with gr.Accordion("Recipe: drop a PNG saved by the studio, or paste a recipe", open=False):
                recipe_file = gr.File(label="PNG or recipe JSON", file_types=[".png", ".json"], type="filepath",
                                      elem_id="recipe-file")
                recipe_text = gr.Code(label="Current recipe (edit or paste, then Restore)", language="json",
                                      interactive=True, elem_id="recipe-text")
                restore = gr.Button("Restore this recipe", size="sm", elem_id="restore")
        with gr.Column(scale=2, min_width=360):
            image = gr.Image(label="Current image", format="png", type="filepath", height=512, interactive=False,
                             buttons=["download", "fullscreen"], elem_id="main-image")
            variations = gr.Gallery(label="Variations: neighbouring seeds (click one to make it current)",
                                    columns=VARIATIONS // 2, rows=2, height="auto", allow_preview=False,
                                    format="png", elem_id="variations")

    with gr.Accordion("Semantic sliders: directions found in the model itself, no labels needed", open=True,
                      elem_id="sliders"):
        with gr.Row(equal_height=True):
            method = gr.Radio(METHODS, value="sefa", label="Directions", scale=3, elem_id="method")
            count = gr.Slider(1, MAX_SLIDERS, value=DEFAULT_SLIDERS, step=1, label="Sliders", scale=2,
                              elem_id="slider-count")
            reset_all = gr.Button("Reset all", size="sm", scale=1, elem_id="reset-all")
        rows, names, sliders, resets, strips = [], [], [], [], []
        for i in range(MAX_SLIDERS):
            with gr.Row(visible=i < DEFAULT_SLIDERS, equal_height=True, elem_classes=["slider-row"]) as row:
                names.append(gr.Textbox(f"direction {i}", show_label=False, container=False, scale=2,
                                        min_width=120, elem_id=f"slider-name-{i}"))
                sliders.append(gr.Slider(-SLIDER_RANGE, SLIDER_RANGE, value=0.0, step=0.1, show_label=False,
                                         container=False, scale=5, buttons=[], elem_id=f"slider-{i}"))
                resets.append(gr.Button("↺", size="sm", scale=0, min_width=40, elem_id=f"slider-reset-{i}"))
                strips.append(gr.Image(show_label=False, container=False, interactive=False, format="png",
                                       type="numpy", height=56, scale=3, min_width=150, buttons=[],
                                       elem_id=f"slider-strip-{i}", elem_classes=["strip"]))
            rows.append(row)

    favourites = gr.Gallery(label="Favourites", columns=8, height="auto", format="png", visible=False,
                            elem_id="favourites")
    kept = gr.State([])
    history = gr.State({"items": [], "index": -1})
    current = gr.Textbox(visible=False, elem_id="current-recipe")  # the recipe being drawn

    controls = Controls(model, seed, blend_on, class_name, blend, truncation, method, sliders)
    inputs = controls.inputs()

    # -- the main image: control values -> recipe -> one engine request ------------------------------

    def to_recipe(*values: Any) -> str:
        return controls.recipe(values).to_json()

    def draw(recipe_json: str) -> tuple[str, str]:
        try:
            recipe = Recipe.from_json(recipe_json)
        except RecipeError as e:
            raise gr.Error(str(e)) from None
        model_ = loaded(recipe.model)
        if recipe.weights_sha256:
            try:
                check_weights(recipe, model_)
            except RecipeError as e:
                raise gr.Error(str(e)) from None
        recipe = replace(recipe, weights_sha256=model_.weights_sha256)
        return files.save(run(request_for(recipe))[0], recipe), recipe.to_json()

    live = [seed.change, blend_on.change, class_name.change, truncation.change, method.change,
            *(s.change for s in blend), *(s.change for s in sliders)]
    gr.on(live, to_recipe, inputs, current, queue=False, trigger_mode="always_last", api_visibility="private",
          show_progress="hidden")
    # The recipe is the public API: draw any state from its JSON.
    current.change(draw, current, [image, recipe_text], api_name="draw", trigger_mode="always_last",
                   show_progress="minimal")

    # -- context: variations, slider strips, history ----------------------------------------------

    def context(*values: Any):
        *state, k, hist = values
        recipe = controls.recipe(tuple(state))
        model_ = loaded(recipe.model)
        request = request_for(recipe)
        variation_seeds = tuple((recipe.seed + 1 + i) % (MAX_SEED + 1) for i in range(VARIATIONS))
        near = run(replace(request, seeds=variation_seeds))
        gallery = [(img, f"seed {s}") for s, img in zip(variation_seeds, near)]
        strip_images = strip_views(model_, recipe, int(k))
        recipe = replace(recipe, weights_sha256=model_.weights_sha256)
        return [gallery, *strip_images, pushed(hist, recipe.to_json())]

    def strip_views(model_: LoadedModel, recipe: Recipe, k: int) -> list[Any]:
        """Each visible slider's strip: the image with that slider at -3, 0 and +3, the others as set."""
        try:
            dirs = directions.load_or_compute(model_, recipe.directions)
            z, c = request_inputs(model_, request_for(recipe))  # [1, z_dim] with the edits applied
        except ValueError as e:
            raise gr.Error(str(e)) from None
        k = min(k, len(dirs))
        zs = [z[0] + (v - recipe.edits.get(i, 0.0)) * dirs[i] for i in range(k) for v in STRIP_VALUES]
        cs = None if c is None else c.expand(len(zs), -1)
        images = run(Request(recipe.model, z=torch.stack(zs), c=cs))
        n = len(STRIP_VALUES)
        views: list[Any] = [grid(images[i * n : (i + 1) * n], cols=n, pad=1) for i in range(k)]
        return views + [None] * (MAX_SLIDERS - k)

    def pushed(hist: dict, recipe_json: str) -> dict:
        items, index = hist["items"], hist["index"]
        if index >= 0 and items[index] == recipe_json:
            return hist  # a state restored from history, or nothing changed
        items = [*items[: index + 1], recipe_json][-HISTORY:]
        return {"items": items, "index": len(items) - 1}

    context_inputs = [*inputs, count, history]
    context_outputs = [variations, *strips, history]
    settled = [seed.change, blend_on.change, class_name.change, truncation.release, method.change, count.change,
               *(s.release for s in blend), *(s.release for s in sliders)]
    gr.on(settled, context, context_inputs, context_outputs, trigger_mode="always_last",
          api_visibility="private", show_progress="hidden")

    # -- model, slider names and visibility ------------------------------------------------------------

    def slider_labels(name: str, method_: str) -> list[str]:
        return directions.slider_names(loaded(name).folder, method_, MAX_SLIDERS)

    def on_model(name: str, method_: str):
        try:
            cfg_names = list(zoo.model_config(name).class_names)
        except zoo.ModelUnavailable as e:  # a name typed into the picker
            raise gr.Error(str(e)) from None
        blend_updates = [gr.update(value=0.0, label=n, visible=True) for n in cfg_names[:MAX_CLASSES]]
        blend_updates += [gr.update(value=0.0, visible=False)] * (MAX_CLASSES - len(blend_updates))
        return [model_card(name), gr.update(choices=cfg_names, value=cfg_names[0] if cfg_names else None,
                                            visible=bool(cfg_names)),
                gr.update(value=False, visible=bool(cfg_names)), *blend_updates, *[0.0] * MAX_SLIDERS,
                *slider_labels(name, method_)]

    # .input, not .change: a recipe being restored sets the model too, and must keep its own values.
    model.input(on_model, [model, method], [info, class_name, blend_on, *blend, *sliders, *names],
                api_visibility="private").then(
        to_recipe, inputs, current, api_visibility="private").then(
        context, context_inputs, context_outputs, api_visibility="private")
    method.change(slider_labels, [model, method], names, api_visibility="private")
    count.change(lambda k: [gr.update(visible=i < k) for i in range(MAX_SLIDERS)], count, rows,
                 api_visibility="private", queue=False)
    blend_on.change(lambda on: (gr.update(visible=not on), gr.update(visible=on)), blend_on,
                    [class_name, blend_group], api_visibility="private", queue=False)

    for i, (name_box, reset) in enumerate(zip(names, resets)):
        def rename(text: str, model_name: str, method_: str, index: int = i) -> None:
            directions.rename_slider(loaded(model_name).folder, method_, index, text)

        gr.on([name_box.submit, name_box.blur], rename, [name_box, model, method], None, api_visibility="private")
        reset.click(lambda: 0.0, None, sliders[i], api_visibility="private", queue=False).then(
            context, context_inputs, context_outputs, api_visibility="private")
    reset_all.click(lambda: [0.0] * MAX_SLIDERS, None, sliders, api_visibility="private", queue=False).then(
        context, context_inputs, context_outputs, api_visibility="private")

    # -- seeds --------------------------------------------------------------------------------------

    dice.click(lambda: random.randint(0, MAX_SEED), None, seed, api_visibility="private", queue=False)

    def pick(seed_value: float, evt: gr.SelectData) -> int:
        return (int(seed_value or 0) + 1 + evt.index) % (MAX_SEED + 1)

    variations.select(pick, seed, seed, api_visibility="private")

    # -- recipes and history ------------------------------------------------------------------------

    def restore_values(recipe: Recipe) -> list[Any]:
        if recipe.model not in zoo.model_names():
            raise gr.Error(f"This recipe needs the model {recipe.model!r}, which this studio does not have.")
        if recipe.weights_sha256:
            try:
                check_weights(recipe, loaded(recipe.model))
            except RecipeError as e:
                raise gr.Error(str(e)) from None
        return [model_card(recipe.model), *controls.values(recipe)]

    def restore_from(source: str | bytes | None) -> list[Any]:
        if not source:
            raise gr.Error("Drop a PNG saved by the studio or paste a recipe first.")
        try:
            recipe = read_recipe(Path(source)) if isinstance(source, str) else read_recipe(source)
        except RecipeError as e:
            raise gr.Error(str(e)) from None
        return restore_values(recipe)

    restored = [info, *inputs]
    recipe_file.upload(restore_from, recipe_file, restored, api_visibility="private").then(
        context, context_inputs, context_outputs, api_visibility="private")
    restore.click(lambda text: restore_from((text or "").encode()), recipe_text, restored,
                  api_visibility="private").then(context, context_inputs, context_outputs, api_visibility="private")

    def step(hist: dict, delta: int) -> list[Any]:
        index = hist["index"] + delta
        if not 0 <= index < len(hist["items"]):
            raise gr.Error("No further history in that direction.")
        return [{**hist, "index": index}, *restore_values(Recipe.from_json(hist["items"][index]))]

    for button, delta in ((back, -1), (forward, 1)):
        button.click(lambda hist, d=delta: step(hist, d), history, [history, *restored],
                     api_visibility="private").then(context, context_inputs, context_outputs,
                                                    api_visibility="private")

    # -- favourites and keyframes --------------------------------------------------------------------

    def keep_current(path: str | None, items: list, recipe_json: str):
        if not path:
            raise gr.Error("Nothing to keep yet: draw an image first.")
        recipe = Recipe.from_json(recipe_json)
        items = [*items, (path, f"{recipe.model} · seed {recipe.seed}")]
        return items, gr.update(value=items, visible=True)

    keep.click(keep_current, [image, kept, recipe_text], [kept, favourites], api_visibility="private")

    def add_keyframe(frames: list[str], recipe_json: str) -> list[str]:
        if not recipe_json:
            raise gr.Error("Draw an image first.")
        if len(frames) >= MAX_KEYFRAMES:
            raise gr.Error(f"An animation holds at most {MAX_KEYFRAMES} keyframes.")
        gr.Info(f"Keyframe {len(frames) + 1} added: see the Interpolate tab.")
        return [*frames, recipe_json]

    add_key.click(add_keyframe, [keyframes, recipe_text], keyframes, api_visibility="private")

    # -- first load ---------------------------------------------------------------------------------
    # The first image appears on page load, not at build time, so launching never waits for a model;
    # the model list is read again then, so models added since launch (fine-tunes) can be picked.
    demo.load(lambda name, method_: [gr.update(choices=zoo.model_names()), *slider_labels(name, method_)],
              [model, method], [model, *names], api_visibility="private").then(
        to_recipe, inputs, current, api_visibility="private").then(
        context, context_inputs, context_outputs, api_visibility="private")
