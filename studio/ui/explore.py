"""The Explore tab: pick a model, draw from seeds, choose a class, pull truncation, keep favourites."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np

from studio import zoo
from studio.engine import EngineBusy, EngineTimeout, GenerationError, Request
from studio.latent import check_seed

if TYPE_CHECKING:
    from studio.engine import Engine

VARIATIONS = 8
MAX_SEED = 2**32 - 1
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
    return "\n\n".join(lines)


def class_picker_update(name: str) -> dict[str, Any]:
    """The class dropdown for model ``name``: its classes, or hidden for an unconditional model."""
    names = list(zoo.model_config(name).class_names)
    return gr.update(choices=names, value=names[0] if names else None, visible=bool(names))


def _seed(value: float | None) -> int:
    if value is None:
        raise gr.Error("Enter a seed: a whole number from 0 to 4294967295.")
    try:
        return check_seed(int(value))
    except ValueError as e:
        raise gr.Error(str(e)) from None


def draw(engine: Engine, model: str, seed: int, class_name: str | None, truncation: float,
         count: int) -> np.ndarray:
    """``count`` images for seeds ``seed, seed + 1, ...`` in one engine request; errors become gr.Error."""
    seeds = tuple(s % (MAX_SEED + 1) for s in range(seed, seed + count))
    try:
        return engine.generate(Request(model, seeds, class_name or None, float(truncation)))
    except (zoo.ModelUnavailable, ValueError, EngineBusy, EngineTimeout, GenerationError) as e:
        raise gr.Error(str(e)) from None


def build_explore_tab(demo: gr.Blocks, engine: Engine) -> None:
    """Lay out the Explore tab inside ``demo`` and wire its events to ``engine``."""
    default = zoo.DEFAULT_MODEL
    default_classes = list(zoo.model_config(default).class_names)

    with gr.Row(equal_height=False, elem_id="explore"):
        with gr.Column(scale=1, min_width=260, elem_classes=["panel"]):
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
            truncation = gr.Slider(0.0, 1.5, value=DEFAULT_TRUNCATION, step=0.05, label="Truncation ψ",
                                   info="1 = full variety · 0 = the average image", elem_id="truncation")
            keep = gr.Button("♥ Keep this one", variant="secondary", elem_id="keep")
        with gr.Column(scale=2, min_width=360):
            image = gr.Image(label="Current image", format="png", type="numpy", height=512, interactive=False,
                             buttons=["download", "fullscreen"], elem_id="main-image")
            variations = gr.Gallery(label="Variations: neighbouring seeds (click one to make it current)",
                                    columns=VARIATIONS // 2, rows=2, height="auto", allow_preview=False,
                                    format="png", elem_id="variations")
    favourites = gr.Gallery(label="Favourites", columns=8, height="auto", format="png", visible=False,
                            elem_id="favourites")
    kept = gr.State([])

    def render(model_name: str, seed_value: float, cls: str | None, psi: float):
        s = _seed(seed_value)
        images = draw(engine, model_name, s, cls, psi, 1 + VARIATIONS)
        gallery = [(img, f"seed {(s + 1 + i) % (MAX_SEED + 1)}") for i, img in enumerate(images[1:])]
        return images[0], gallery

    controls = [model, seed, class_name, truncation]
    gr.on(
        triggers=[seed.change, class_name.change, truncation.change],
        fn=render,
        inputs=controls,
        outputs=[image, variations],
        api_name="render",
        trigger_mode="always_last",
        show_progress="minimal",
    )
    model.change(lambda n: (model_card(n), class_picker_update(n)), model, [info, class_name],
                 api_visibility="private").then(render, controls, [image, variations], api_visibility="private")
    dice.click(lambda: random.randint(0, MAX_SEED), None, seed, api_visibility="private")

    def pick(seed_value: float, evt: gr.SelectData) -> int:
        return (_seed(seed_value) + 1 + evt.index) % (MAX_SEED + 1)

    variations.select(pick, seed, seed, api_visibility="private")

    def keep_current(current: np.ndarray | None, items: list, model_name: str, seed_value: float, cls: str | None):
        if current is None:
            raise gr.Error("Nothing to keep yet: draw an image first.")
        label = f"{model_name} · seed {int(seed_value)}" + (f" · {cls}" if cls else "")
        items = [*items, (current, label)]
        return items, gr.update(value=items, visible=True)

    keep.click(keep_current, [image, kept, model, seed, class_name], [kept, favourites], api_visibility="private")
    # The first image appears on page load, not at build time, so launching never waits for a model;
    # the model list is read again then, so models added since launch (fine-tunes) can be picked.
    demo.load(lambda: gr.update(choices=zoo.model_names()), None, model, api_visibility="private")
    demo.load(render, controls, [image, variations], api_visibility="private")
