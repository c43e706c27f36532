"""The Interpolate tab: keyframes from Explore on a path through latent space, previewed, exported.

Keyframes live in a ``gr.State`` shared with the Explore tab (a list of recipe JSONs); this tab shows
them as a strip, trims them, and turns them into frames through ``studio.animation``. Animation
files are named by everything that made them, so a preview's GIF is also its export, and repeats
cost nothing. Previews and exports are heavy: they take turns (``HEAVY_LIMIT`` at once), draw their
frames in small engine requests between everyone's drawing, and stream them into the file. What each
callback does lives in ``interpolate_logic``; this module holds the layout and the wiring.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

import gradio as gr

from studio import animation, latent
from studio.ui import interpolate_logic as logic
from studio.ui.errors import shown_to_user
from studio.ui.files import AnimationFiles, ImageFiles
from studio.ui.interpolate_logic import NO_KEYFRAMES, summary_markdown

if TYPE_CHECKING:
    from studio.engine import Engine

MODE_CHOICES = [("Slerp: along the sphere", "slerp"), ("Lerp: straight line", "lerp")]
SIZE_CHOICES = [("1× (model size)", 1), ("2×", 2), ("4×", 4)]
DEFAULT_FRAMES_PER_SEGMENT = 12
DEFAULT_FPS = 12
# Previews and exports share one queue slot group: a crowd of long exports cannot take every core.
HEAVY_EVENTS = "animation"
HEAVY_LIMIT = 2
PRIVATE = {"api_visibility": "private"}


def _layout() -> SimpleNamespace:
    """The tab's components, laid out."""
    ui = SimpleNamespace()
    with gr.Row(equal_height=False, elem_id="interpolate"):
        with gr.Column(scale=1, min_width=260, elem_classes=["panel"]):
            ui.mode = gr.Radio(MODE_CHOICES, value="slerp", label="Path in z",
                               info="Slerp keeps every frame as vivid as the keyframes · StyleGAN models walk W in straight lines", elem_id="interp-mode")
            ui.frames = gr.Slider(1, animation.MAX_FRAMES_PER_SEGMENT, value=DEFAULT_FRAMES_PER_SEGMENT, step=1,
                                  label="Frames per segment", elem_id="interp-per-segment")
            ui.easing = gr.Radio(list(latent.EASINGS), value="linear", label="Easing",
                                 info="ease-in-out lingers at each keyframe", elem_id="interp-easing")
            ui.loop = gr.Checkbox(True, label="Loop: return to the first keyframe", elem_id="interp-loop")
            ui.fps = gr.Slider(1, animation.MAX_FPS, value=DEFAULT_FPS, step=1, label="Frames per second",
                               elem_id="interp-fps")
            ui.scale = gr.Radio(SIZE_CHOICES, value=2, label="Output size", info="Enlarged with crisp pixels",
                                elem_id="interp-size")
            ui.summary = gr.Markdown(NO_KEYFRAMES, elem_id="interp-summary")
            ui.preview = gr.Button("▶ Preview", variant="primary", elem_id="interp-preview")
            with gr.Row():
                ui.gif = gr.Button("Export GIF", elem_id="interp-export-gif")
                ui.mp4 = gr.Button("Export MP4", elem_id="interp-export-mp4")
            ui.download = gr.File(label="Download", interactive=False, elem_id="interp-download")
        with gr.Column(scale=2, min_width=360):
            # Fixed 100 px thumbnails: fitted columns would blow two keyframes up to half the width each.
            # A click shows one large, with its whole caption.
            ui.strip = gr.Gallery(label="Keyframes, in path order", columns=6, height=260, fit_columns=False,
                                  format="png", elem_id="interp-keyframes", elem_classes=["strip"])
            with gr.Row():
                ui.remove_last = gr.Button("Remove last", size="sm", elem_id="interp-remove-last")
                ui.clear = gr.Button("Clear all", size="sm", variant="stop", elem_id="interp-clear")
            ui.view = gr.Image(label="Animation", type="filepath", height=384, interactive=False,
                               buttons=["download", "fullscreen"], elem_id="interp-animation")
            # Fixed height: the frames shown (up to logic.PREVIEW_FRAMES) scroll inside the gallery, not the page.
            ui.frames_view = gr.Gallery(label="Frames", columns=6, height=420, format="png",
                                        elem_id="interp-frames", elem_classes=["strip"])
    return ui


def build_interpolate_tab(demo: gr.Blocks, engine: Engine, keyframes: gr.State) -> None:
    """Lay out the Interpolate tab inside ``demo``; ``keyframes`` holds the recipe JSONs Explore adds."""
    strip_files = ImageFiles()  # the strip's PNGs carry their recipes, like every image the studio saves
    exports = AnimationFiles()
    ui = _layout()

    @shown_to_user
    def describe(texts: list[str], frames_per_segment: float, loop: bool, fps: float, scale: int) -> str:
        return summary_markdown(logic.recipes_of(texts), frames_per_segment, loop, fps, scale, engine.config)

    @shown_to_user
    def show(texts: list[str], frames_per_segment: float, loop: bool, fps: float, scale: int) -> tuple[list, str]:
        return logic.keyframe_strip(engine, strip_files, texts), describe(texts, frames_per_segment, loop, fps, scale)

    @shown_to_user
    def preview(texts: list[str], mode: str, frames_per_segment: float, easing: str, loop: bool, fps: float,
                scale: int) -> tuple[str, list]:
        chosen = logic.plan(engine, texts, mode, frames_per_segment, easing, loop, fps, scale, ".gif")
        return logic.preview(engine, exports, chosen)

    def exporter(suffix: str) -> Callable[..., str]:
        @shown_to_user
        def export(texts: list[str], mode: str, frames_per_segment: float, easing: str, loop: bool, fps: float,
                   scale: int) -> str:
            chosen = logic.plan(engine, texts, mode, frames_per_segment, easing, loop, fps, scale, suffix)
            return logic.write(engine, exports, chosen)

        return export

    settings = [keyframes, ui.mode, ui.frames, ui.easing, ui.loop, ui.fps, ui.scale]
    heavy = {"concurrency_limit": HEAVY_LIMIT, "concurrency_id": HEAVY_EVENTS}
    ui.preview.click(preview, settings, [ui.view, ui.frames_view], api_name="interpolate_preview", **heavy)
    ui.gif.click(exporter(".gif"), settings, ui.download, api_name="interpolate_gif", **heavy)
    ui.mp4.click(exporter(".mp4"), settings, ui.download, api_name="interpolate_mp4", **heavy)

    shown = [keyframes, ui.frames, ui.loop, ui.fps, ui.scale]
    keyframes.change(show, shown, [ui.strip, ui.summary], **PRIVATE)
    demo.load(show, shown, [ui.strip, ui.summary], **PRIVATE)
    for control in shown[1:]:
        control.change(describe, shown, ui.summary, show_progress="hidden", **PRIVATE)
    ui.remove_last.click(lambda texts: texts[:-1], keyframes, keyframes, **PRIVATE)
    ui.clear.click(lambda: [], None, keyframes, **PRIVATE)
