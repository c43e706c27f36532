"""The Explore tab: models, seeds, classes and blends, truncation, semantic sliders, recipes, history,
network bending, and starting from your own image (projection).

Data flow: any control change rebuilds the current recipe (a hidden JSON box, no model work); the
recipe's change draws the main image through the engine, so moving a slider costs exactly one
engine request. Discrete changes and slider releases also refresh the context: the neighbouring
seeds, each slider's preview strip, and the back/forward history. What each callback does lives in
``explore_logic`` (and ``project_logic``); this module holds the layout and the wiring.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gradio as gr

from studio import zoo
from studio.bending import OPS
from studio.projection import DEFAULT_STEPS
from studio.recipe import Recipe
from studio.ui import explore_logic as logic
from studio.ui import project_logic
from studio.ui.controls import (MAX_CLASSES, MAX_SLIDERS, METHODS, SLIDER_RANGE, Controls, class_updates,
                                style_updates, tuned_update)
from studio.ui.errors import shown_to_user
from studio.ui.files import ImageFiles

if TYPE_CHECKING:
    from studio.engine import Engine
    from studio.models.folder import ModelConfig

DEFAULT_SLIDERS = 8
# The first impression: a painterly eye, with a little truncation for a cleaner image.
DEFAULT_SEED = 2
DEFAULT_TRUNCATION = 0.8
PRIVATE = {"api_visibility": "private"}


def _layout(default: str, config: ModelConfig) -> SimpleNamespace:
    """The tab's components, laid out; ``default`` is the model shown first, ``config`` its config."""
    classes = list(config.class_names)
    ui = SimpleNamespace()
    with gr.Row(equal_height=False, elem_id="explore"):
        with gr.Column(scale=1, min_width=280, elem_classes=["panel"]):
            # Custom values pass through so API callers get the zoo's own message for an unknown name.
            ui.model = gr.Dropdown(zoo.model_names(), value=default, label="Model", allow_custom_value=True,
                                   elem_id="model-picker")
            ui.info = gr.Markdown(logic.card_markdown(default, config), elem_classes=["model-card"])
            with gr.Row(equal_height=True):
                ui.seed = gr.Number(value=DEFAULT_SEED, label="Seed", precision=0, minimum=0, maximum=logic.MAX_SEED,
                                    elem_id="seed", scale=3)
                ui.dice = gr.Button("🎲 Random", elem_id="random-seed", scale=1, min_width=90)
            ui.class_name = gr.Dropdown(classes, value=classes[0] if classes else None, label="Class",
                                        visible=bool(classes), allow_custom_value=True, elem_id="class-picker")
            ui.blend_on = gr.Checkbox(False, label="Blend classes", visible=bool(classes), elem_id="blend-on")
            with gr.Group(visible=False, elem_id="blend") as ui.blend_group:
                ui.blend = [gr.Slider(0, 1, value=0.0, step=0.05, label=classes[i] if i < len(classes)
                                      else f"class {i}", visible=i < len(classes), elem_id=f"blend-{i}")
                            for i in range(MAX_CLASSES)]
            ui.truncation = gr.Slider(0.0, 1.5, value=DEFAULT_TRUNCATION, step=0.05, label="Truncation ψ",
                                      info="1 = full variety · 0 = the average image", elem_id="truncation")
            tuned = tuned_update(config)  # shown only for a fine-tuned model whose base is here
            ui.tuned = gr.Slider(0.0, 1.0, value=tuned["value"], step=0.05, label=tuned["label"],
                                 visible=tuned["visible"], info="blend the weights live: see the style arrive",
                                 elem_id="tuned")
            _style_layout(ui, config.num_style_layers)
            with gr.Row():
                ui.back = gr.Button("◀ Back", size="sm", elem_id="history-back")
                ui.forward = gr.Button("Forward ▶", size="sm", elem_id="history-forward")
            with gr.Row():
                ui.keep = gr.Button("♥ Keep", size="sm", elem_id="keep")
                ui.add_key = gr.Button("➕ Add as keyframe", size="sm", elem_id="add-keyframe")
            with gr.Accordion("Recipe: drop a PNG saved by the studio, or paste a recipe", open=False):
                ui.recipe_file = gr.File(label="PNG or recipe JSON", file_types=[".png", ".json"], type="filepath",
                                         elem_id="recipe-file")
                ui.recipe_text = gr.Code(label="Current recipe (edit or paste, then Restore)", language="json",
                                         interactive=True, elem_id="recipe-text")
                ui.restore = gr.Button("Restore this recipe", size="sm", elem_id="restore")
            _project_layout(ui)
        with gr.Column(scale=2, min_width=360):
            ui.image = gr.Image(label="Current image", format="png", type="filepath", height=512, interactive=False,
                                buttons=["download", "fullscreen"], elem_id="main-image")
            ui.variations = gr.Gallery(label="Variations: neighbouring seeds (click one to make it current)",
                                       columns=logic.VARIATIONS // 2, rows=2, height="auto", allow_preview=False,
                                       format="png", elem_id="variations")
    _slider_layout(ui)
    _bend_layout(ui)
    ui.favourites = gr.Gallery(label="Favourites", columns=8, height="auto", format="png", visible=False,
                               elem_id="favourites")
    ui.kept = gr.State([])
    ui.history = gr.State(logic.EMPTY_HISTORY)
    ui.current = gr.Textbox(visible=False, elem_id="current-recipe")  # the recipe being drawn
    # A projected latent with the model and seed it was found for (see explore_logic.with_found).
    ui.found = gr.Textbox(visible=False, elem_id="found-latent")
    return ui


def _project_layout(ui: SimpleNamespace) -> None:
    """"Start from an image": drop a picture, project it (live preview), stop early."""
    with gr.Accordion("Start from an image: find the model's closest image to your picture", open=False,
                      elem_id="project-panel"):
        with gr.Row(equal_height=True):
            ui.project_target = gr.Image(label="Your picture", type="filepath", height=160, sources=["upload"],
                                         elem_id="project-target")
            ui.project_preview = gr.Image(label="Closest so far", type="numpy", format="png", height=160,
                                          interactive=False, buttons=[], elem_id="project-preview")
        ui.project_steps = gr.Slider(10, 1000, value=DEFAULT_STEPS, step=10, label="Steps",
                                     info="more: closer, slower (the default takes under a minute on a CPU)",
                                     elem_id="project-steps")
        with gr.Row():
            ui.project = gr.Button("Project", variant="primary", size="sm", elem_id="project")
            ui.project_stop = gr.Button("Stop, keep the best", size="sm", elem_id="project-stop")
        ui.project_status = gr.Markdown("", elem_id="project-status")


def _wire_projection(ui: SimpleNamespace, engine: Engine, restored: Callable[[Recipe], list[Any]],
                     shown: list[Any], settle: Callable[[Any], None]) -> None:
    """Connect "Start from an image": the search streams previews; its result is restored (``restored`` into
    ``shown``) as the current state, then drawn through ``settle``."""
    def run(path: str | None, model: str, seed: float | None, steps: float, class_name: str | None,
            blend_on: bool, request: gr.Request) -> Iterator[list[Any]]:
        keep = [gr.update()] * len(shown)
        held = None if blend_on else class_name  # blending: the search finds the blend too
        try:
            for image, status, found in project_logic.projected(engine, path, model, seed, steps, held,
                                                                request.session_hash):
                yield [image, status, *(keep if found is None else restored(found))]
        except ValueError as e:
            raise gr.Error(str(e)) from None

    search = ui.project.click(run, [ui.project_target, ui.model, ui.seed, ui.project_steps, ui.class_name,
                                    ui.blend_on],
                              [ui.project_preview, ui.project_status, *shown], **PRIVATE)
    settle(search)

    def stop(request: gr.Request) -> None:
        project_logic.stop(request.session_hash)

    ui.project_stop.click(stop, None, None, queue=False, **PRIVATE)


def _style_layout(ui: SimpleNamespace, count: int) -> None:
    """StyleGAN's per-layer controls (shown for a model with ``count`` > 0 style layers): style mixing,
    the noise seed, and the layers the semantic sliders move."""
    layer = {"minimum": 0, "maximum": max(count - 1, 1), "step": 1}  # Gradio needs maximum > minimum
    with gr.Accordion("Style mixing and noise", open=True, visible=count > 0, elem_id="styles") as ui.style_panel:
        with gr.Row(equal_height=True):
            ui.mix_seed = gr.Number(None, label="Mix styles from seed", info="blank: no mixing", precision=0,
                                    minimum=0, maximum=logic.MAX_SEED, elem_id="mix-seed")
            ui.mix_dice = gr.Button("🎲", scale=0, min_width=40, elem_id="mix-random")
        ui.mix_band = gr.Radio(list(logic.STYLE_BANDS), value="coarse", label="Layers it gives",
                               info="coarse 4²–8²: pose, shape · middle 16²–32²: features · fine 64²+: colour, texture",
                               elem_id="mix-band")
        with gr.Row():
            ui.mix_first = gr.Slider(value=0, label="from layer", elem_id="mix-first", **layer)
            ui.mix_last = gr.Slider(value=min(3, max(count - 1, 0)), label="to layer", elem_id="mix-last", **layer)
        with gr.Row(equal_height=True):
            ui.noise_seed = gr.Number(None, label="Noise seed", info="blank: the model's constant noise", precision=0,
                                      minimum=0, maximum=logic.MAX_SEED, elem_id="noise-seed")
            ui.reroll = gr.Button("🎲 Re-roll detail", scale=0, min_width=120, elem_id="reroll-noise")
        with gr.Row():
            ui.edit_first = gr.Slider(value=0, label="Sliders move layers from", elem_id="edit-first", **layer)
            ui.edit_last = gr.Slider(value=max(count - 1, 0), label="to", elem_id="edit-last", **layer)


def _wire_styles(ui: SimpleNamespace, engine: Engine, settle: Callable[[Any], None]) -> None:
    """Connect the style controls: each settled change redraws through ``settle``."""
    @shown_to_user
    def band(name: str, model: str) -> tuple[int, int]:
        return logic.band_layers(name, engine.config(model).num_style_layers)

    settle(ui.mix_band.input(band, [ui.mix_band, ui.model], [ui.mix_first, ui.mix_last], queue=False, **PRIVATE))
    ui.mix_dice.click(lambda: random.randint(0, logic.MAX_SEED), None, ui.mix_seed, queue=False, **PRIVATE)
    ui.reroll.click(lambda: random.randint(0, logic.MAX_SEED), None, ui.noise_seed, queue=False, **PRIVATE)
    changes = [ui.mix_seed.change, ui.noise_seed.change,
               *(s.release for s in (ui.mix_first, ui.mix_last, ui.edit_first, ui.edit_last))]
    settle(gr.on(changes, lambda: None, None, None, queue=False, trigger_mode="always_last", **PRIVATE))


def _bend_layout(ui: SimpleNamespace) -> None:
    """The network-bending panel: build a bend, add it to the stack (a text of one bend per line), clear."""
    with gr.Accordion("Bend the network: transform a layer's feature maps", open=False, elem_id="bend-panel"):
        with gr.Row(equal_height=True):
            ui.bend_op = gr.Dropdown(list(OPS), value="rotate", label="Operation", elem_id="bend-op")
            ui.bend_layer = gr.Number(1, label="Layer", info="0 = the coarsest", precision=0, minimum=0,
                                      elem_id="bend-layer")
            ui.bend_value = gr.Number(OPS["rotate"][0], label="Value", elem_id="bend-value")
            ui.bend_channels = gr.Textbox("", label="Channels", placeholder="all · 0-31 · random=25%",
                                          elem_id="bend-channels")
            ui.add_bend = gr.Button("➕ Add bend", elem_id="add-bend")
            ui.clear_bends = gr.Button("Clear", elem_id="clear-bends")
        ui.bends = gr.Textbox("", label="Bends, applied in order", lines=2, elem_id="bends",
                              info="one per line: LAYER:OP=VALUE[@CHANNELS], e.g. 2:rotate=90 or 1:ablate@0-31")


def _wire_bends(ui: SimpleNamespace, settle: Callable[[Any], None]) -> None:
    """Connect the bending panel: adding, clearing or editing the stack redraws through ``settle``."""
    ui.bend_op.input(lambda op: OPS[op][0], ui.bend_op, ui.bend_value, queue=False, **PRIVATE)
    added = shown_to_user(logic.added_bend)
    settle(ui.add_bend.click(added, [ui.bends, ui.bend_op, ui.bend_layer, ui.bend_value, ui.bend_channels],
                             ui.bends, queue=False, **PRIVATE))
    settle(ui.clear_bends.click(lambda: "", None, ui.bends, queue=False, **PRIVATE))
    settle(ui.bends.blur(lambda: None, None, None, queue=False, **PRIVATE))


def _slider_layout(ui: SimpleNamespace) -> None:
    """The semantic sliders' panel: method, count, and one row (name, slider, reset, strip) per slider."""
    with gr.Accordion("Semantic sliders: directions found in the model itself, no labels needed", open=True,
                      elem_id="sliders"):
        with gr.Row(equal_height=True):
            ui.method = gr.Radio(METHODS, value="sefa", label="Directions", scale=3, elem_id="method")
            ui.count = gr.Slider(1, MAX_SLIDERS, value=DEFAULT_SLIDERS, step=1, label="Sliders", scale=2,
                                 elem_id="slider-count")
            ui.reset_all = gr.Button("Reset all", size="sm", scale=1, elem_id="reset-all")
        ui.rows, ui.names, ui.sliders, ui.resets, ui.strips = [], [], [], [], []
        for i in range(MAX_SLIDERS):
            with gr.Row(visible=i < DEFAULT_SLIDERS, equal_height=True, elem_classes=["slider-row"]) as row:
                ui.names.append(gr.Textbox(f"direction {i}", show_label=False, container=False, scale=2,
                                           min_width=120, elem_id=f"slider-name-{i}"))
                ui.sliders.append(gr.Slider(-SLIDER_RANGE, SLIDER_RANGE, value=0.0, step=0.1, show_label=False,
                                            container=False, scale=5, buttons=[], elem_id=f"slider-{i}"))
                ui.resets.append(gr.Button("↺", size="sm", scale=0, min_width=40, elem_id=f"slider-reset-{i}"))
                ui.strips.append(gr.Image(show_label=False, container=False, interactive=False, format="png",
                                          type="numpy", height=56, scale=3, min_width=150, buttons=[],
                                          elem_id=f"slider-strip-{i}", elem_classes=["strip"]))
            ui.rows.append(row)


def _wire_keeping(ui: SimpleNamespace, keyframes: gr.State) -> None:
    """Connect "Keep" (the favourites) and "Add as keyframe" (the Interpolate tab's ``keyframes``)."""
    @shown_to_user
    def keep(path: str | None, items: list, recipe_json: str) -> tuple[list, Any]:
        items = logic.kept(items, path, recipe_json)
        return items, gr.update(value=items, visible=True)

    ui.keep.click(keep, [ui.image, ui.kept, ui.recipe_text], [ui.kept, ui.favourites], **PRIVATE)

    @shown_to_user
    def add_keyframe(frames: list[str], recipe_json: str) -> list[str]:
        frames = logic.with_keyframe(frames, recipe_json)
        gr.Info(f"Keyframe {len(frames)} added: see the Interpolate tab.")
        return frames

    ui.add_key.click(add_keyframe, [keyframes, ui.recipe_text], keyframes, **PRIVATE)


def build_explore_tab(demo: gr.Blocks, engine: Engine, keyframes: gr.State) -> None:
    """Lay out the Explore tab inside ``demo``, wire it to ``engine``; "add as keyframe" feeds ``keyframes``."""
    files = ImageFiles()
    ui = _layout(zoo.DEFAULT_MODEL, engine.config(zoo.DEFAULT_MODEL))
    controls = Controls(ui.model, ui.seed, ui.blend_on, ui.class_name, ui.blend, ui.truncation, ui.method, ui.sliders,
                        [ui.mix_seed, ui.mix_first, ui.mix_last, ui.noise_seed, ui.edit_first, ui.edit_last], ui.bends,
                        ui.tuned)
    inputs = [*controls.inputs(), ui.found]

    def to_recipe(*values: Any) -> str:
        return shown_to_user(logic.with_found)(controls.recipe(values[:-1], engine.config), values[-1]).to_json()

    @shown_to_user
    def context(recipe_json: str, k: float) -> list[Any]:
        """The current recipe's neighbouring seeds and slider strips."""
        recipe = Recipe.from_json(recipe_json)
        strips = logic.strip_views(engine, files, recipe, int(k))
        return [logic.variations(engine, files, recipe), *strips, *[None] * (MAX_SLIDERS - len(strips))]

    @shown_to_user
    def restored(recipe: Recipe) -> list[Any]:
        logic.check_restorable(engine, recipe, zoo.model_names())
        return [logic.card_markdown(recipe.model, engine.config(recipe.model)), *controls.values(recipe, engine.config),
                logic.found_of(recipe)]

    refreshed = ([ui.current, ui.count], [ui.variations, *ui.strips])
    # History is written at once (no model work), so a quick second change never races the first one's entry.
    remember = {"fn": logic.pushed, "inputs": [ui.history, ui.current], "outputs": ui.history, "queue": False}

    def settle(event: Any) -> None:
        """After ``event``: the recipe from the controls (built once), its history entry, then its context."""
        event.then(to_recipe, inputs, ui.current, **PRIVATE).then(**remember, **PRIVATE).then(
            context, *refreshed, **PRIVATE)

    # Live: every move redraws the main image (one engine request) and nothing else.
    live = [ui.truncation.change, ui.tuned.change, *(s.change for s in ui.blend), *(s.change for s in ui.sliders)]
    gr.on(live, to_recipe, inputs, ui.current, queue=False, trigger_mode="always_last", show_progress="hidden",
          **PRIVATE)
    # The recipe is the public API: draw any state from its JSON.
    ui.current.change(shown_to_user(lambda text: logic.draw(engine, files, text)), ui.current,
                      [ui.image, ui.recipe_text], api_name="draw", trigger_mode="always_last", show_progress="minimal")
    # Settled: discrete changes and releases draw and refresh the context, building the recipe once.
    settled = [ui.seed.change, ui.blend_on.change, ui.class_name.change, ui.method.change, ui.truncation.release,
               ui.tuned.release,
               *(s.release for s in ui.blend), *(s.release for s in ui.sliders)]
    gr.on(settled, to_recipe, inputs, ui.current, queue=False, trigger_mode="always_last", show_progress="hidden",
          **PRIVATE).then(**remember, **PRIVATE).then(context, *refreshed, show_progress="hidden", **PRIVATE)
    ui.count.change(context, *refreshed, trigger_mode="always_last", show_progress="hidden", **PRIVATE)

    @shown_to_user
    def labels(name: str, method: str) -> list[str]:
        return logic.slider_labels(engine, name, method, MAX_SLIDERS)

    @shown_to_user
    def on_model(name: str, method: str) -> list[Any]:
        config = engine.config(name)
        names = list(config.class_names)
        return [logic.card_markdown(name, config),
                gr.update(choices=names, value=names[0] if names else None, visible=bool(names)),
                gr.update(value=False, visible=bool(names)), *class_updates(names, {}), *[0.0] * MAX_SLIDERS,
                *labels(name, method), gr.update(visible=config.num_style_layers > 0),
                *style_updates(config.num_style_layers), tuned_update(config)]

    # .input, not .change: a recipe being restored sets the model too, and must keep its own values.
    settle(ui.model.input(on_model, [ui.model, ui.method], [ui.info, ui.class_name, ui.blend_on, *ui.blend,
                                                            *ui.sliders, *ui.names, ui.style_panel, *controls.style,
                                                            ui.tuned],
                          **PRIVATE))
    _wire_styles(ui, engine, settle)
    _wire_bends(ui, settle)
    _wire_projection(ui, engine, restored, [ui.info, *inputs], settle)
    ui.method.change(labels, [ui.model, ui.method], ui.names, **PRIVATE)
    ui.count.change(lambda k: [gr.update(visible=i < k) for i in range(MAX_SLIDERS)], ui.count, ui.rows,
                    queue=False, **PRIVATE)
    ui.blend_on.change(lambda on: (gr.update(visible=not on), gr.update(visible=on)), ui.blend_on,
                       [ui.class_name, ui.blend_group], queue=False, **PRIVATE)
    for i, (name_box, reset) in enumerate(zip(ui.names, ui.resets)):
        rename = shown_to_user(lambda text, name, method, index=i: logic.name_slider(engine, name, method, index,
                                                                                        text))
        gr.on([name_box.submit, name_box.blur], rename, [name_box, ui.model, ui.method], None, **PRIVATE)
        settle(reset.click(lambda: 0.0, None, ui.sliders[i], queue=False, **PRIVATE))
    settle(ui.reset_all.click(lambda: [0.0] * MAX_SLIDERS, None, ui.sliders, queue=False, **PRIVATE))

    ui.dice.click(lambda: random.randint(0, logic.MAX_SEED), None, ui.seed, queue=False, **PRIVATE)

    def pick(seed_value: float, evt: gr.SelectData) -> int:
        return logic.picked_seed(seed_value, evt.index)

    ui.variations.select(pick, ui.seed, ui.seed, **PRIVATE)

    shown = [ui.info, *inputs]  # the found latent last, as ``restored`` gives it
    from_file = shown_to_user(lambda path: restored(logic.recipe_from_source(path)))
    from_text = shown_to_user(lambda text: restored(logic.recipe_from_source((text or "").encode())))
    settle(ui.recipe_file.upload(from_file, ui.recipe_file, shown, **PRIVATE))
    settle(ui.restore.click(from_text, ui.recipe_text, shown, **PRIVATE))

    @shown_to_user
    def step(hist: dict, delta: int) -> list[Any]:
        hist, recipe = logic.history_step(hist, delta)
        return [hist, *restored(recipe)]

    for button, delta in ((ui.back, -1), (ui.forward, 1)):
        settle(button.click(lambda hist, d=delta: step(hist, d), ui.history, [ui.history, *shown], **PRIVATE))

    _wire_keeping(ui, keyframes)
    # The first image appears on page load, not at build time, so launching never waits for a model;
    # the model list is read again then, so models added since launch (fine-tunes) can be picked.
    settle(demo.load(lambda name, method: [gr.update(choices=zoo.model_names()), *labels(name, method)],
                     [ui.model, ui.method], [ui.model, *ui.names], **PRIVATE))
