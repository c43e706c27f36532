"""The Music tab: an audio file turned into a music video (keyframes moved by its pulse, energy and harmony).

The artist drops a sound, sees its waveform with the onsets found, picks keyframes (seeds of a model, or
the Interpolate tab's) and the mapping, previews the first seconds, renders the whole video with a
progress bar and an ETA, and downloads the MP4 (sound muxed in, recipe in its comment) and its recipe.
Renders take turns with animation exports (the same queue group). What each callback does lives in
``music_logic``; this module holds the layout and the wiring.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

import gradio as gr

from studio import animation, music, zoo
from studio.ui import music_logic as logic
from studio.ui.errors import shown_to_user
from studio.ui.files import ImageFiles
from studio.ui.interpolate import HEAVY_EVENTS, HEAVY_LIMIT, PRIVATE, SIZE_CHOICES

if TYPE_CHECKING:
    from studio.engine import Engine

SOURCE_CHOICES = [("Seeds of a model", "seeds"), ("The Interpolate tab's keyframes", "keyframes")]
PACE_CHOICES = [("per minute", "minute"), ("per bar", "bar"), ("once over the song", "song")]
DIRECTION_CHOICES = [(f"slider {i}", str(i)) for i in range(10)] + [("random", logic.RANDOM)]
HARMONY_CHOICES = [("auto", "auto"), ("classes", "classes"), ("slider directions", "directions")]
DEFAULTS = music.Mapping()


def _layout() -> SimpleNamespace:
    """The tab's components, laid out."""
    ui = SimpleNamespace()
    with gr.Row(equal_height=False, elem_id="music"):
        with gr.Column(scale=1, min_width=280, elem_classes=["panel"]):
            ui.audio = gr.Audio(sources=["upload"], type="filepath", label="Audio", elem_id="music-audio")
            with gr.Row():
                ui.start = gr.Number(0, label="Start (s)", minimum=0, elem_id="music-start")
                ui.duration = gr.Number(0, label="Duration (s, 0 = to the end)", minimum=0, elem_id="music-duration")
            ui.source = gr.Radio(SOURCE_CHOICES, value="seeds", label="Keyframes", elem_id="music-source")
            names = zoo.model_names()
            ui.model = gr.Dropdown(names, value=zoo.DEFAULT_MODEL if zoo.DEFAULT_MODEL in names else names[0],
                                   label="Model", elem_id="music-model")
            ui.seeds = gr.Textbox("1,5,9", label="Seeds, in path order", elem_id="music-seeds")
            with gr.Row():
                ui.pace = gr.Number(DEFAULTS.pace, label="Keyframes", minimum=0.001, elem_id="music-pace")
                ui.per = gr.Dropdown(PACE_CHOICES, value=DEFAULTS.per, label="Pace", elem_id="music-per")
            ui.pulse = gr.Slider(0, 5, value=DEFAULTS.pulse, step=0.1, label="Pulse: push on each onset",
                                 elem_id="music-pulse")
            with gr.Row():
                ui.decay = gr.Slider(0.03, 2, value=DEFAULTS.pulse_decay, step=0.01, label="Pulse half-life (s)",
                                     elem_id="music-decay")
                ui.direction = gr.Dropdown(DIRECTION_CHOICES, value="0", label="Pulse direction",
                                           elem_id="music-direction")
            ui.motion = gr.Slider(0, 1, value=DEFAULTS.motion, step=0.05, label="Motion: loudness drives speed",
                                  elem_id="music-motion")
            with gr.Row():
                ui.harmony = gr.Slider(0, 1, value=DEFAULTS.harmony, step=0.05, label="Harmony: chroma drives",
                                       elem_id="music-harmony")
                ui.harmony_to = gr.Dropdown(HARMONY_CHOICES, value="auto", label="Harmony moves",
                                            elem_id="music-harmony-to")
            with gr.Row():
                ui.fps = gr.Slider(1, animation.MAX_FPS, value=music.DEFAULT_FPS, step=1, label="Frames per second",
                                   elem_id="music-fps")
                ui.scale = gr.Radio(SIZE_CHOICES, value=2, label="Output size", elem_id="music-size")
            with gr.Row():
                ui.preview = gr.Button(f"▶ Preview {music.PREVIEW_SECONDS:g} s", elem_id="music-preview")
                ui.render = gr.Button("Render video", variant="primary", elem_id="music-render")
        with gr.Column(scale=2, min_width=360):
            ui.summary = gr.Markdown(logic.NO_AUDIO, elem_id="music-summary")
            ui.waveform = gr.Image(label="Waveform and onsets", type="filepath", height=160, interactive=False,
                                   elem_id="music-waveform")
            ui.video = gr.Video(label="Music video", interactive=False, elem_id="music-video")
            ui.download = gr.File(label="Download: the MP4 and its recipe", file_count="multiple",
                                  interactive=False, elem_id="music-download")
    return ui


def build_music_tab(demo: gr.Blocks, engine: Engine, keyframes: gr.State) -> None:
    """Lay out the Music tab inside ``demo``; ``keyframes`` holds the Interpolate tab's recipe JSONs."""
    pictures, videos = ImageFiles(), logic.MusicFiles()
    ui = _layout()

    @shown_to_user
    def show(path: str | None, start: float, duration: float, fps: float) -> tuple[str | None, str]:
        if not path:
            return None, logic.NO_AUDIO
        sound, found = logic.analysed(path, start, duration, fps)
        name = path.rsplit("/", 1)[-1]
        return pictures.picture(logic.waveform_picture(sound, found)), logic.sound_summary(sound, found, name)

    def renderer(seconds: float | None):  # noqa: ANN202 - a Gradio callback
        @shown_to_user
        def render(path: str | None, start: float, duration: float, source: str, model: str, seeds: str,
                   texts: list[str], pace: float, per: str, pulse: float, decay: float, direction: str, motion: float,
                   harmony: float, harmony_to: str, fps: float, scale: int,
                   progress: gr.Progress = gr.Progress()) -> tuple[str, list[str]]:
            chosen = logic.video_recipe(engine, path, start, duration, source, model, seeds, texts, pace, per, pulse,
                                        decay, direction, motion, harmony, harmony_to, fps, scale)
            video, recipe = logic.with_progress(
                lambda report: videos.render(engine, chosen, path, seconds, report),
                lambda fraction, words: progress(fraction, desc=words))
            return video, [video, recipe]

        return render

    sound = [ui.audio, ui.start, ui.duration, ui.fps]
    for control in sound:
        control.change(show, sound, [ui.waveform, ui.summary], **PRIVATE)
    settings = [ui.audio, ui.start, ui.duration, ui.source, ui.model, ui.seeds, keyframes, ui.pace, ui.per, ui.pulse,
                ui.decay, ui.direction, ui.motion, ui.harmony, ui.harmony_to, ui.fps, ui.scale]
    heavy = {"concurrency_limit": HEAVY_LIMIT, "concurrency_id": HEAVY_EVENTS}
    ui.preview.click(renderer(music.PREVIEW_SECONDS), settings, [ui.video, ui.download], api_name="music_preview",
                     **heavy)
    ui.render.click(renderer(None), settings, [ui.video, ui.download], api_name="music_render", **heavy)
