"""The Fine-tune tab: upload artworks, start a background job, watch it learn, keep the model.

The tab only reads job files and asks the JobManager to act, so training never runs in the web
server's process and a closed tab or restarted server loses nothing: reopening the tab shows the
latest job again. In a shared studio every event acts for the browser's owner id only (see
``studio.ui.owners``): its own jobs and data sets, checked here on the server for each event.
What each callback does lives in ``finetune_logic``; this module holds the layout and the wiring.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gradio as gr

from studio import train, zoo
from studio.limits import max_upload_mb
from studio.ui import finetune_logic as logic
from studio.ui.errors import shown_to_user
from studio.ui.files import ImageFiles, pixels, stamp
from studio.ui.owners import owner_of

if TYPE_CHECKING:
    from studio.engine import Engine
    from studio.jobs import JobManager

REFRESH_S = 1.0
PRIVATE = {"api_visibility": "private"}
CUSTOM = ("steps", "batch", "lr", "loss", "augment", "freeze_g", "freeze_d")  # the Custom preset's settings


def _layout() -> SimpleNamespace:
    """The tab's components, laid out."""
    ui = SimpleNamespace()
    with gr.Row(equal_height=False, elem_id="finetune"):
        with gr.Column(scale=1, min_width=320, elem_classes=["panel"]):
            gr.Markdown("### 1 · Your artworks\nImages (PNG, JPEG, WebP, BMP, TIFF, GIF) and/or zip archives, "
                        f"up to {max_upload_mb():g} MB a file.")
            ui.uploads = gr.File(file_count="multiple", file_types=["image", ".zip"], type="filepath",
                                 label="Drop artworks here", height=220, elem_id="ft-upload")
            ui.data_name = gr.Textbox(label="Data set name", placeholder="my-prints", elem_id="ft-data-name")
            ui.replace_data = gr.Checkbox(False, label="Replace my data set of that name if it exists",
                                          elem_id="ft-data-replace")
            ui.base = gr.Dropdown(zoo.model_names(), value=zoo.DEFAULT_MODEL, label="Base model",
                                  allow_custom_value=True, elem_id="ft-base")
            ui.ingest = gr.Button("Prepare data set", elem_id="ft-ingest")
            ui.report = gr.Markdown(elem_id="ft-report")
            ui.contact = gr.Image(label="Contact sheet", type="numpy", format="png", interactive=False,
                                  visible=False, elem_id="ft-contact")
            gr.Markdown("### 2 · Training")
            ui.out_name = gr.Textbox(label="New model name", placeholder="my-eyes", elem_id="ft-out")
            ui.replace_model = gr.Checkbox(False, label="Replace my model of that name if it exists",
                                           elem_id="ft-out-replace")
            ui.preset = gr.Radio(["Quick", "Standard", "Custom"], value="Quick", label="Preset",
                                 info="Quick: about 7 min on a 2-core CPU · Standard: longer, better",
                                 elem_id="ft-preset")
            with gr.Group(visible=False, elem_id="ft-custom") as ui.custom:
                ui.custom_values = [
                    gr.Number(300, label=f"Steps (1 to {train.MAX_STEPS:,})", precision=0, minimum=1,
                              maximum=train.MAX_STEPS, elem_id="ft-steps"),
                    gr.Number(16, label=f"Batch size (1 to {train.MAX_BATCH})", precision=0, minimum=1,
                              maximum=train.MAX_BATCH, elem_id="ft-batch"),
                    gr.Number(2e-4, label="Learning rate", elem_id="ft-lr"),
                    gr.Radio(list(train.LOSSES), value="logistic", label="Loss", elem_id="ft-loss"),
                    gr.Radio(["auto", "on", "off"], value="auto", label="DiffAugment", elem_id="ft-augment"),
                    gr.Number(0, label="Frozen generator blocks", precision=0, minimum=0, elem_id="ft-freeze-g"),
                    gr.Number(0, label="Frozen discriminator blocks (needs a pretrained one)", precision=0,
                              minimum=0, elem_id="ft-freeze-d"),
                ]
            ui.estimate = gr.Markdown(logic.ESTIMATE_HINT, elem_id="ft-estimate")
            with gr.Row():
                ui.start = gr.Button("Start", variant="primary", elem_id="ft-start")
                ui.cancel = gr.Button("Cancel", variant="stop", elem_id="ft-cancel")
                ui.resume = gr.Button("Resume", elem_id="ft-resume")
            # Filled on page load with this browser's jobs (all of them in a studio of one's own).
            ui.job_picker = gr.Dropdown([], label="Jobs", elem_id="ft-jobs")
        with gr.Column(scale=2, min_width=420):
            _progress_layout(ui)
    ui.job_id = gr.State(None)
    ui.previews_sent = gr.State(None)  # (path, mtime) of the live grid last sent to this browser
    ui.checkpoint = gr.State(None)  # the file of the checkpoint the scrubber shows: what "Save as model" keeps
    return ui


def _progress_layout(ui: SimpleNamespace) -> None:
    """The right-hand column: progress, before/now previews, curves, checkpoints and the memorization check."""
    ui.bar = gr.HTML(logic.progress_html(None), elem_id="ft-progress")
    with gr.Row():
        ui.before = gr.Image(label="Before: the base model", type="numpy", format="png", interactive=False,
                             elem_id="ft-before", elem_classes=["strip"])
        ui.now = gr.Image(label="Now: the fine-tune (EMA weights), same seeds", type="numpy", format="png",
                          interactive=False, elem_id="ft-now", elem_classes=["strip"])
    with gr.Row():
        ui.loss_plot = gr.LinePlot(x="step", y="value", color="loss", title="Losses", height=220, elem_id="ft-losses")
        ui.swd_plot = gr.LinePlot(x="step", y="swd", title="SWD to your set (lower is closer)", height=220,
                                  elem_id="ft-swd")
    with gr.Accordion("Checkpoints: watch the style arrive, keep a model · check for memorised images", open=True):
        # The slider runs over the job's kept checkpoints, oldest to newest; its range follows the job each tick.
        ui.scrub = gr.Slider(0, 1, value=0, step=1, label="Checkpoint, oldest to newest", elem_id="ft-scrub")
        ui.scrub_caption = gr.Markdown(elem_id="ft-scrub-caption")
        ui.scrub_image = gr.Image(label="The preview seeds at this checkpoint (EMA weights)", type="numpy",
                                  format="png", interactive=False, elem_id="ft-scrub-image", elem_classes=["strip"])
        with gr.Row():
            ui.save_name = gr.Textbox(label="Save this checkpoint as a model named", elem_id="ft-save-name", scale=2)
            ui.save = gr.Button("Save as model", elem_id="ft-save", scale=1)
        ui.memorize = gr.Button("Memorization check: samples beside their nearest training images",
                                elem_id="ft-memorize")
        ui.pairs = gr.Gallery(columns=8, height="auto", format="png", elem_id="ft-pairs",
                              label="Sample · nearest artwork (distance)")


def build_finetune_tab(demo: gr.Blocks, engine: Engine, manager: JobManager, owner: gr.BrowserState,
                       shared: bool = False) -> None:
    """Lay out the Fine-tune tab inside ``demo``; jobs go through ``manager``, previews through ``engine``.

    Every event reads ``owner`` (the browser's id); in a ``shared`` studio it sees and changes that owner's
    jobs and data sets only.
    """
    ui = _layout()
    files = ImageFiles()  # the base model's previews, handed to Gradio as finished files

    @shown_to_user
    def prepare(files: list[str] | None, name: str, base: str, replace: bool, owner_id: str | None) -> list[Any]:
        made = logic.prepare_data_set(files, name, engine.config(base).resolution, replace, owner_of(owner_id, shared))
        return [made.report, made.name, gr.update(value=made.contact, visible=made.contact is not None)]

    prepared = ui.ingest.click(prepare, [ui.uploads, ui.data_name, ui.base, ui.replace_data, owner],
                               [ui.report, ui.data_name, ui.contact], **PRIVATE)
    ui.preset.change(lambda p: gr.update(visible=p == "Custom"), ui.preset, ui.custom, queue=False, **PRIVATE)

    clock = logic.StepClock()  # one per studio: a model and settings are timed once for every visitor

    def timed(base: str, preset: str, *custom: Any) -> str:
        return logic.estimate(clock, base, preset, dict(zip(CUSTOM, custom)))

    costly = [c for name, c in zip(CUSTOM, ui.custom_values) if name != "lr"]  # settings that change a step's cost
    timing = {"fn": timed, "inputs": [ui.base, ui.preset, *ui.custom_values], "outputs": ui.estimate, **PRIVATE}
    gr.on([ui.base.change, ui.preset.change, *(c.change for c in costly)], **timing)
    prepared.success(**timing)  # the artist who keeps the default base sees the figure before Start too

    @shown_to_user
    def begin(name: str, base: str, out: str, replace: bool, preset: str, *values: Any) -> list[Any]:
        *custom, owner_id = values
        who = owner_of(owner_id, shared)
        new_id = logic.start(manager, name, base, out, replace, preset, dict(zip(CUSTOM, custom)), who, shared)
        return [new_id, gr.update(choices=logic.job_choices(manager, who), value=new_id),
                logic.base_preview(engine, files, base)]

    ui.start.click(begin, [ui.data_name, ui.base, ui.out_name, ui.replace_model, ui.preset, *ui.custom_values, owner],
                   [ui.job_id, ui.job_picker, ui.before], **PRIVATE)

    def acting(action: str) -> Any:
        @shown_to_user
        def act(job: str | None, owner_id: str | None) -> Any:
            who = owner_of(owner_id, shared)
            logic.act(manager, action, job, who)
            return gr.update(choices=logic.job_choices(manager, who), value=job)

        return act

    ui.cancel.click(acting("cancel"), [ui.job_id, owner], ui.job_picker, **PRIVATE)
    ui.resume.click(acting("resume"), [ui.job_id, owner], ui.job_picker, **PRIVATE)

    @shown_to_user
    def pick(chosen: str | None, owner_id: str | None) -> tuple[str | None, Any]:
        if not chosen:
            return None, None
        job = logic.owned_job(manager, chosen, owner_of(owner_id, shared))
        return chosen, logic.base_preview(engine, files, job["config"]["base"])

    ui.job_picker.input(pick, [ui.job_picker, owner], [ui.job_id, ui.before], **PRIVATE)

    def refresh(current: str | None, owner_id: str | None, sent: tuple[str, int] | None) -> list[Any]:
        if not current:
            return [logic.progress_html(None), *[gr.skip()] * 6]
        try:
            who = owner_of(owner_id, shared)
            job = logic.owned_job(manager, current, who)
        except ValueError:
            return [logic.progress_html(None), None, *[gr.skip()] * 4, None]
        # The grid changes every few steps, the timer ticks every second: an unchanged grid is not sent again.
        shown = stamp(job["previews"])
        return [logic.progress_html(job), gr.skip() if shown == sent else pixels(job["previews"]), *logic.curves(job),
                gr.update(maximum=max(1, len(logic.checkpoint_names(job)) - 1)),  # a range of one would not slide
                gr.update(choices=logic.job_choices(manager, who), value=current), shown]

    gr.Timer(REFRESH_S).tick(refresh, [ui.job_id, owner, ui.previews_sent],
                             [ui.bar, ui.now, ui.loss_plot, ui.swd_plot, ui.scrub, ui.job_picker,
                              ui.previews_sent], show_progress="hidden", **PRIVATE)

    _wire_checkpoints(ui, engine, manager, owner, shared)

    # A reopened tab (or a restarted server) shows this owner's latest job again.
    def latest(owner_id: str | None) -> tuple[str | None, Any, Any]:
        try:
            who = owner_of(owner_id, shared)
        except ValueError:  # the page's first visit: the owner id is being made now, and has no jobs yet
            return None, gr.update(choices=[]), None
        listed = manager.list(who)
        if not listed:
            return None, gr.update(choices=[]), None
        newest, preview = pick(listed[-1]["id"], owner_id)
        return newest, gr.update(choices=logic.job_choices(manager, who), value=newest), preview

    demo.load(latest, owner, [ui.job_id, ui.job_picker, ui.before], **PRIVATE)


def _wire_checkpoints(ui: SimpleNamespace, engine: Engine, manager: JobManager, owner: gr.BrowserState,
                      shared: bool) -> None:
    """The checkpoint scrubber, "Save as model" for the checkpoint it shows, and the memorization check."""
    scrubber = logic.Scrubber()  # one per studio: a checkpoint's grid is drawn once for every visitor

    def scrub(current: str | None, index: float, owner_id: str | None) -> tuple[Any, str, str | None]:
        # Said in the caption, not as an error pop-up: a job picked before its first checkpoint is no mistake.
        try:
            shown = scrubber.view(manager, current, index, owner_of(owner_id, shared))
        except ValueError as e:
            return None, str(e) if current else "", None
        return shown.grid, shown.caption, shown.name

    gr.on([ui.scrub.change, ui.job_id.change], scrub, [ui.job_id, ui.scrub, owner],
          [ui.scrub_image, ui.scrub_caption, ui.checkpoint], trigger_mode="always_last", **PRIVATE)

    @shown_to_user
    def save(current: str | None, chosen: str | None, name: str, owner_id: str | None) -> None:
        saved = logic.save_checkpoint(manager, current, chosen, name, owner_of(owner_id, shared))
        gr.Info(f"Saved {saved}: it is in the Explore and Interpolate model pickers now.")

    ui.save.click(save, [ui.job_id, ui.checkpoint, ui.save_name, owner], None, **PRIVATE)

    @shown_to_user
    def memorize(current: str | None, owner_id: str | None) -> list:
        found = logic.check_memorization(engine, manager, current, owner_of(owner_id, shared))
        gr.Info(found.summary)
        return found.pairs

    ui.memorize.click(memorize, [ui.job_id, owner], ui.pairs, **PRIVATE)
