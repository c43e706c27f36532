"""The Share tab: load a model from the Hugging Face Hub, preview and push a model with its card.

What each callback does lives in ``share_logic``; this module holds the layout and the wiring.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gradio as gr

from studio import zoo
from studio.ui import share_logic as logic
from studio.ui.errors import shown_to_user

if TYPE_CHECKING:
    from studio.engine import Engine


def _layout() -> SimpleNamespace:
    """The tab's components, laid out."""
    ui = SimpleNamespace()
    with gr.Row(equal_height=False, elem_id="share"):
        with gr.Column(scale=1, min_width=300, elem_classes=["panel"]):
            gr.Markdown("### Load from the Hub\nAny GAN Studio model repository (`config.json` + "
                        "`model.safetensors`); works offline for models in the local Hugging Face cache.")
            ui.pull_repo = gr.Textbox(label="Repository", placeholder="owner/name", elem_id="share-pull-repo")
            ui.revision = gr.Textbox(label="Revision", placeholder="main (or a tag, branch or commit)",
                                     elem_id="share-revision")
            ui.pull = gr.Button("Load", variant="primary", elem_id="share-pull")
            ui.pull_status = gr.Markdown(elem_id="share-pull-status")
            gr.Markdown("### Push to the Hub")
            ui.model = gr.Dropdown(zoo.model_names(), value=zoo.DEFAULT_MODEL, label="Model", allow_custom_value=True,
                                   elem_id="share-model")
            ui.push_repo = gr.Textbox(label="Repository", placeholder="your-name/my-model", elem_id="share-push-repo")
            ui.private = gr.Checkbox(False, label="Private repository (when it is created)", elem_id="share-private")
            ui.token = gr.Textbox(label="Hugging Face token with write access", type="password",
                                  info=logic.TOKEN_RULE, elem_id="share-token")
            with gr.Row():
                ui.preview = gr.Button("Preview (dry run)", elem_id="share-preview")
                ui.push = gr.Button("Push", variant="primary", elem_id="share-push")
            ui.push_status = gr.Markdown(elem_id="share-push-status")
        with gr.Column(scale=2, min_width=420):
            ui.sample = gr.Image(label="Seeds 0-7 of the loaded model, or the pushed card's picture", type="filepath",
                                 format="png", interactive=False, elem_id="share-sample")
            ui.card = gr.Markdown(elem_id="share-card")
    return ui


def build_share_tab(demo: gr.Blocks, engine: Engine, shared: bool = False) -> None:
    """Lay out the Share tab inside ``demo``: pull from and push to the Hub; pulled models draw through ``engine``.

    ``shared``: other people use this studio, so the machine's Hugging Face token is never used for them.
    """
    ui = _layout()

    @shown_to_user
    def pull(repo_id: str, revision: str) -> list[Any]:
        loaded = logic.load_from_hub(engine, repo_id, revision, shared)
        return [loaded.status, gr.update(choices=zoo.model_names(), value=loaded.name), loaded.sample, loaded.card]

    ui.pull.click(pull, [ui.pull_repo, ui.revision], [ui.pull_status, ui.model, ui.sample, ui.card],
                  api_name="pull_model")

    @shown_to_user
    def preview(name: str, repo_id: str) -> tuple[Any, str]:
        return logic.dry_run(engine, name, repo_id)

    ui.preview.click(preview, [ui.model, ui.push_repo], [ui.sample, ui.card], api_name="push_preview")

    @shown_to_user
    def push(name: str, repo_id: str, is_private: bool, typed: str) -> str:
        return logic.push_model(engine, name, repo_id, is_private, typed, shared)

    ui.push.click(push, [ui.model, ui.push_repo, ui.private, ui.token], ui.push_status, api_name="push_model")
    # Models made or pulled since launch can be pushed without reloading the page.
    demo.load(lambda: gr.update(choices=zoo.model_names()), None, ui.model, api_visibility="private")
