"""The Fine-tune tab: upload artworks, start a background job, watch it learn, keep the model.

The tab only reads job files and asks the JobManager to act, so training never runs in the web
server's process and a closed tab or restarted server loses nothing: reopening the tab shows the
latest job again. In a shared studio every event acts for the browser's owner id only (see
``studio.ui.owners``): its own jobs and data sets, checked here on the server for each event.

Pictures from the studio's home (contact sheet, live previews) are handed to Gradio as pixels, which
it copies into its own cache: Gradio serves no file from the home, wherever that is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
import pandas as pd

from PIL import Image

from studio import data, jobs, metrics, train, zoo
from studio.engine import Request
from studio.limits import max_upload_mb
from studio.media import grid, to_uint8
from studio.ui.errors import USER_ERRORS
from studio.ui.owners import dataset_name, owner_of

if TYPE_CHECKING:
    from studio.engine import Engine
    from studio.jobs import JobManager

REFRESH_S = 1.0
PRESETS = {
    "Quick": {**train.QUICK_PRESET},
    "Standard": {"steps": 2000, "batch": 16, "freeze_g": 0},
}
MEMORIZATION_SAMPLES = 16
CHECKPOINT_NAME = re.compile(r"step-\d{7}\.safetensors")
NO_JOB = "No such job among yours: pick one from the list."


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text.strip()).strip("-_")[:64]


def progress_html(job: dict[str, Any] | None) -> str:
    """A progress bar with step, ETA and status for ``job`` (or a hint when there is none)."""
    if not job:
        return "<div class='job-bar empty'>No fine-tune yet: upload artworks, then Start.</div>"
    p = job.get("progress") or {}
    step, total = p.get("step", 0), p.get("total") or job["config"]["steps"]
    pct = 100 * step / max(1, total)
    status = job["status"]
    extra = ""
    if status == jobs.QUEUED and job.get("queue_position"):
        extra = f" · position {job['queue_position']} in the queue"
    elif status == jobs.RUNNING and p.get("eta_s") is not None:
        eta = int(p["eta_s"])
        hours, rest = divmod(eta, 3600)
        clock = f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
        extra = f" · {p.get('s_per_step', 0):.2f} s/step · ETA {clock}"
    error = f"<div class='job-error'>{job['error']}</div>" if job.get("error") else ""
    return (f"<div class='job-bar'><div class='job-fill' style='width:{pct:.1f}%'></div></div>"
            f"<div class='job-line'><b>{status}</b> · step {step} / {total}{extra}</div>{error}")


def curves(job: dict[str, Any] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Loss curves (long format: step, loss, value) and the SWD curve (step, swd)."""
    p = (job or {}).get("progress") or {}
    rows = [{"step": h["step"], "loss": k, "value": v} for h in p.get("history", []) for k, v in h.items()
            if k != "step"]
    losses = pd.DataFrame(rows, columns=["step", "loss", "value"])
    swd = pd.DataFrame(p.get("swd", []), columns=["step", "swd"])
    return losses, swd


def _job_choices(manager: JobManager, owner: str | None) -> list[tuple[str, str]]:
    return [(f"{j['id']} · {j['config']['out']} · {j['status']}", j["id"]) for j in reversed(manager.list(owner))]


def _pixels(path: str | Path | None) -> np.ndarray | None:
    """A PNG from the studio's home as pixels, for Gradio to copy into its cache (None if there is none yet)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, TypeError):  # not written yet, or replaced while being read: the next tick shows it
        return None


def _stamp(path: str | None) -> tuple[str, int] | None:
    """``path`` and its modification time in ns (None if there is no such file yet): which version of it this is."""
    try:
        return (path, os.stat(path).st_mtime_ns) if path else None
    except OSError:
        return None


def _checkpoints(job: dict[str, Any]) -> Path:
    """The folder of a job's checkpoints (a job from before run folders kept them under its model's name)."""
    return train.run_dir(job["config"].get("run") or job["config"]["out"]) / "checkpoints"


def build_finetune_tab(demo: gr.Blocks, engine: Engine, manager: JobManager, owner: gr.BrowserState,
                       shared: bool = False) -> None:
    """Lay out the Fine-tune tab inside ``demo``; jobs go through ``manager``, previews through ``engine``.

    Every event reads ``owner`` (the browser's id); in a ``shared`` studio it sees and changes that owner's
    jobs and data sets only.
    """
    with gr.Row(equal_height=False, elem_id="finetune"):
        with gr.Column(scale=1, min_width=320, elem_classes=["panel"]):
            gr.Markdown("### 1 · Your artworks\nImages (PNG, JPEG, WebP, BMP, TIFF, GIF) and/or zip archives, "
                        f"up to {max_upload_mb():g} MB a file.")
            uploads = gr.File(file_count="multiple", file_types=["image", ".zip"], type="filepath",
                              label="Drop artworks here", height=220, elem_id="ft-upload")
            data_name = gr.Textbox(label="Data set name", placeholder="my-prints", elem_id="ft-data-name")
            replace_data = gr.Checkbox(False, label="Replace my data set of that name if it exists",
                                       elem_id="ft-data-replace")
            base = gr.Dropdown(zoo.model_names(), value=zoo.DEFAULT_MODEL, label="Base model",
                               allow_custom_value=True, elem_id="ft-base")
            ingest_button = gr.Button("Prepare data set", elem_id="ft-ingest")
            report = gr.Markdown(elem_id="ft-report")
            contact = gr.Image(label="Contact sheet", type="numpy", format="png", interactive=False, visible=False,
                               elem_id="ft-contact")
            gr.Markdown("### 2 · Training")
            out_name = gr.Textbox(label="New model name", placeholder="my-eyes", elem_id="ft-out")
            replace_model = gr.Checkbox(False, label="Replace my model of that name if it exists",
                                        elem_id="ft-out-replace")
            preset = gr.Radio(["Quick", "Standard", "Custom"], value="Quick", label="Preset",
                              info="Quick: about 7 min on a 2-core CPU · Standard: longer, better",
                              elem_id="ft-preset")
            with gr.Group(visible=False, elem_id="ft-custom") as custom:
                steps = gr.Number(300, label=f"Steps (1 to {train.MAX_STEPS:,})", precision=0, minimum=1,
                                  maximum=train.MAX_STEPS, elem_id="ft-steps")
                batch = gr.Number(16, label=f"Batch size (1 to {train.MAX_BATCH})", precision=0, minimum=1,
                                  maximum=train.MAX_BATCH, elem_id="ft-batch")
                lr = gr.Number(2e-4, label="Learning rate", elem_id="ft-lr")
                loss = gr.Radio(list(train.LOSSES), value="logistic", label="Loss", elem_id="ft-loss")
                augment = gr.Radio(["auto", "on", "off"], value="auto", label="DiffAugment", elem_id="ft-augment")
                freeze_g = gr.Number(0, label="Frozen generator blocks", precision=0, minimum=0, elem_id="ft-freeze-g")
                freeze_d = gr.Number(0, label="Frozen discriminator blocks (needs a pretrained one)", precision=0,
                                     minimum=0, elem_id="ft-freeze-d")
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="ft-start")
                cancel = gr.Button("Cancel", variant="stop", elem_id="ft-cancel")
                resume = gr.Button("Resume", elem_id="ft-resume")
            # Filled on page load with this browser's jobs (all of them in a studio of one's own).
            job_picker = gr.Dropdown([], label="Jobs", elem_id="ft-jobs")
        with gr.Column(scale=2, min_width=420):
            bar = gr.HTML(progress_html(None), elem_id="ft-progress")
            with gr.Row():
                before = gr.Image(label="Before: the base model", type="numpy", format="png", interactive=False,
                                  elem_id="ft-before", elem_classes=["strip"])
                now = gr.Image(label="Now: the fine-tune (EMA weights), same seeds", type="numpy", format="png",
                               interactive=False, elem_id="ft-now", elem_classes=["strip"])
            with gr.Row():
                loss_plot = gr.LinePlot(x="step", y="value", color="loss", title="Losses", height=220,
                                        elem_id="ft-losses")
                swd_plot = gr.LinePlot(x="step", y="swd", title="SWD to your set (lower is closer)", height=220,
                                       elem_id="ft-swd")
            with gr.Accordion("Keep the model · check for memorised images", open=True):
                with gr.Row():
                    checkpoint = gr.Dropdown([], label="Checkpoint", elem_id="ft-checkpoint", scale=2)
                    save_name = gr.Textbox(label="Save as model named", elem_id="ft-save-name", scale=2)
                    save = gr.Button("Save as model", elem_id="ft-save", scale=1)
                memorize = gr.Button("Memorization check: samples beside their nearest training images",
                                     elem_id="ft-memorize")
                pairs = gr.Gallery(columns=8, height="auto", format="png", elem_id="ft-pairs",
                                   label="Sample · nearest artwork (distance)")
    job_id = gr.State(None)
    previews_sent = gr.State(None)  # (path, mtime) of the live grid last sent to this browser
    timer = gr.Timer(REFRESH_S)

    def run(request: Request) -> np.ndarray:
        try:
            return engine.generate(request)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None

    def prepare(files: list[str] | None, name: str, base_model: str, replace: bool, owner_id: str | None):
        who = owner_of(owner_id, shared)
        if not files:
            raise gr.Error("Drop some artworks (images or zip archives) first.")
        name = _slug(name) or "my-set"
        try:
            resolution = zoo.model_config(base_model).resolution
            result = data.ingest([Path(f) for f in files], dataset_name(who, name), resolution,
                                 overwrite=bool(replace))
        except data.DatasetExists as e:
            raise gr.Error(f"You have a data set called {name!r} already ({e.images} images): tick \"Replace my "
                           f"data set of that name\" to replace it, or choose another name.") from None
        except data.NoUsableImages as e:
            reasons = "; ".join(f"{Path(r.source).name}: {r.reason}" for r in e.rejected[:10])
            raise gr.Error(f"None of these files can be used ({reasons}).") from None
        except (ValueError, zoo.ModelUnavailable) as e:
            raise gr.Error(str(e)) from None
        lines = [f"**{len(result.kept)} kept**, {len(result.rejected)} rejected → data set `{name}` "
                 f"at {resolution}px."]
        lines += [f"- `{Path(r.source).name}`: {r.reason}" for r in result.rejected[:50]]
        if result.near_duplicates:
            lines.append(f"\n{len(result.near_duplicates)} kept image(s) look the same as another one (same "
                         f"structure and colours); check they are not copies:")
            lines += [f"- `{Path(n.source).name}` looks like `{Path(n.resembles).name}`"
                      for n in result.near_duplicates[:50]]
        sheet = _pixels(result.dataset / "contact.png")
        return "\n".join(lines), name, gr.update(value=sheet, visible=sheet is not None)

    ingest_button.click(prepare, [uploads, data_name, base, replace_data, owner], [report, data_name, contact],
                        api_visibility="private")
    preset.change(lambda p: gr.update(visible=p == "Custom"), preset, custom, queue=False, api_visibility="private")

    def begin(name: str, base_model: str, out: str, replace: bool, chosen: str, *custom_values: Any):
        *custom_values, owner_id = custom_values
        who = owner_of(owner_id, shared)
        name = _slug(name or "")
        stored = dataset_name(who, name)
        if not name or stored not in data.list_datasets():
            raise gr.Error("Prepare a data set first (step 1).")
        out = _slug(out) or f"{_slug(base_model)}-{name}"
        if out in zoo.model_names():
            mine = any(j["config"]["out"] == out and j["status"] == jobs.FINISHED for j in manager.list(who))
            if not replace:
                raise gr.Error(f"A model called {out!r} exists already: choose another name, or tick \"Replace my "
                               f"model of that name\".")
            if shared and not mine:
                raise gr.Error(f"A model called {out!r} exists already and was not made by you: choose another name.")
        n_steps, n_batch, rate, loss_kind, aug, fg, fd = custom_values
        settings = PRESETS.get(chosen) or {"steps": int(n_steps), "batch": int(n_batch), "lr": float(rate),
                                           "loss": loss_kind, "augment": aug, "freeze_g": int(fg),
                                           "freeze_d": int(fd)}
        try:
            config = train.TrainConfig(data=stored, out=out, base=base_model, overwrite=bool(replace), **settings)
            new_id = manager.submit(config, stored, owner=who or "")
        except (ValueError, TypeError, OverflowError) as e:  # numbers the config refuses, in its words
            raise gr.Error(str(e)) from None
        return new_id, gr.update(choices=_job_choices(manager, who), value=new_id), base_preview(base_model)

    def base_preview(base_model: str) -> np.ndarray:
        # The same fixed seeds and class blend as the training previews, from the base model.
        return grid(run(Request(base_model, train.PREVIEW_SEEDS)), cols=4)

    start.click(begin, [data_name, base, out_name, replace_model, preset, steps, batch, lr, loss, augment, freeze_g,
                        freeze_d, owner], [job_id, job_picker, before], api_visibility="private")

    def owned(current: str | None, owner_id: str | None) -> tuple[dict[str, Any], str | None]:
        """The job ``current`` and the owner acting, once checked that the job is that owner's."""
        who = owner_of(owner_id, shared)
        if not current:
            raise gr.Error("Pick a job first.")
        try:
            return manager.get(current, who), who
        except KeyError:
            raise gr.Error(NO_JOB) from None

    def act(action: str, current: str | None, owner_id: str | None):
        _, who = owned(current, owner_id)
        try:
            getattr(manager, action)(current, who)
        except (ValueError, KeyError) as e:
            raise gr.Error(str(e)) from None
        return gr.update(choices=_job_choices(manager, who), value=current)

    cancel.click(lambda j, o: act("cancel", j, o), [job_id, owner], job_picker, api_visibility="private")
    resume.click(lambda j, o: act("resume", j, o), [job_id, owner], job_picker, api_visibility="private")

    def pick(chosen: str | None, owner_id: str | None):
        if not chosen:
            return None, None
        job, _ = owned(chosen, owner_id)
        base_model = job["config"]["base"]
        return chosen, base_preview(base_model) if base_model != "none" else None

    job_picker.input(pick, [job_picker, owner], [job_id, before], api_visibility="private")

    def refresh(current: str | None, owner_id: str | None, sent: tuple[str, int] | None):
        if not current:
            return [progress_html(None), *[gr.skip()] * 6]
        try:
            job, who = owned(current, owner_id)
        except gr.Error:
            return [progress_html(None), None, *[gr.skip()] * 4, None]
        losses, swd = curves(job)
        found = sorted(_checkpoints(job).glob("step-*.safetensors"))
        # The grid changes every few steps, the timer ticks every second: an unchanged grid is not sent again.
        stamp = _stamp(job["previews"])
        return [progress_html(job), gr.skip() if stamp == sent else _pixels(job["previews"]), losses, swd,
                gr.update(choices=[p.name for p in reversed(found)]),
                gr.update(choices=_job_choices(manager, who), value=current), stamp]

    timer.tick(refresh, [job_id, owner, previews_sent], [bar, now, loss_plot, swd_plot, checkpoint, job_picker,
                                                         previews_sent],
               api_visibility="private", show_progress="hidden")

    def save_checkpoint(current: str | None, chosen: str | None, name: str, owner_id: str | None) -> None:
        job, _ = owned(current, owner_id)
        path = _checkpoints(job) / (chosen or "")
        if not chosen or not CHECKPOINT_NAME.fullmatch(chosen) or not path.is_file():
            raise gr.Error("Pick one of the job's checkpoints.")
        name = _slug(name)
        if not name or name in zoo.model_names():
            raise gr.Error("Give the model a new name (letters, digits, - and _).")
        try:
            train.export_checkpoint(path, name)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        gr.Info(f"Saved {name}: it is in the Explore and Interpolate model pickers now.")

    save.click(save_checkpoint, [job_id, checkpoint, save_name, owner], None, api_visibility="private")

    def check_memorization(current: str | None, owner_id: str | None):
        job, _ = owned(current, owner_id)
        model_name = job["config"]["out"]
        if model_name not in zoo.model_names():
            raise gr.Error("The job has no model yet: let it finish, or save a checkpoint as a model.")
        samples = run(Request(model_name, tuple(range(MEMORIZATION_SAMPLES))))
        real = data.load_dataset(job["data"])
        found = metrics.memorization(samples, real)
        items = []
        for sample, index, distance in zip(samples, found.indices.tolist(), found.distances.tolist()):
            copy = " · NEAR-COPY" if distance < found.threshold else ""
            items += [(sample, "sample"), (to_uint8(real[index : index + 1])[0], f"nearest {distance:.3f}{copy}")]
        gr.Info(f"{found.fraction:.0%} of {len(samples)} samples are near-copies of a training image "
                f"(distance below {found.threshold}).")
        return items

    memorize.click(check_memorization, [job_id, owner], pairs, api_visibility="private")

    # A reopened tab (or a restarted server) shows this owner's latest job again.
    def latest(owner_id: str | None):
        try:
            who = owner_of(owner_id, shared)
        except gr.Error:  # the page's first visit: the owner id is being made now, and has no jobs yet
            return None, gr.update(choices=[]), None
        listed = manager.list(who)
        if not listed:
            return None, gr.update(choices=[]), None
        newest, preview = pick(listed[-1]["id"], owner_id)
        return newest, gr.update(choices=_job_choices(manager, who), value=newest), preview

    demo.load(latest, owner, [job_id, job_picker, before], api_visibility="private")
