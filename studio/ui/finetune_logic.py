"""What the Fine-tune tab does, without Gradio: data sets, jobs of one owner, progress, checkpoints (and the
scrubber that shows the style arrive over them), and how long a run will take here (measured on real steps of
the picked model before it starts).

Every function acts for one owner (None: everyone, in a studio of one's own; see ``studio.ui.owners``)
and raises ``ValueError`` with a message for the artist; the tab turns those into ``gr.Error``.
Pictures from the studio's home are returned as pixels (``studio.ui.files.pixels``), never as paths.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from studio import data, jobs, latent, metrics, train, zoo
from studio.engine import folder_identity
from studio.media import grid, to_uint8
from studio.sampling import Request
from studio.storage import MAX_NAME_LENGTH
from studio.ui.files import pixels
from studio.ui.owners import OWNER_TAG_LENGTH, dataset_name

if TYPE_CHECKING:
    from studio.engine import Engine
    from studio.jobs import JobManager
    from studio.ui.files import ImageFiles

PRESETS = {
    "Quick": {**train.QUICK_PRESET},
    "Standard": {"steps": 2000, "batch": 16, "freeze_g": 0},
}
MEMORIZATION_SAMPLES = 16
SLOW_RUN_S = 3600.0  # a run estimated longer than this on this machine is announced with a warning
ESTIMATE_HINT = "How long a run takes here is measured when you pick a base model or prepare a data set."
CHECKPOINT_NAME = re.compile(r"step-\d{7}\.safetensors")
NO_JOB = "No such job among yours: pick one from the list."
SCRUB_CACHE = 32  # checkpoint grids kept drawn, so sliding back and forth over a run redraws none of them


def slug(text: str | None, limit: int = MAX_NAME_LENGTH) -> str:
    """A usable name (``storage.check_name``'s rule) made from free text: other characters become '-'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", (text or "").strip()).strip("-_.")[:limit].rstrip("-_.")


def data_set_slug(text: str | None) -> str:
    """A data set name from free text, short enough to stay a usable name under its owner's tag."""
    return slug(text, MAX_NAME_LENGTH - OWNER_TAG_LENGTH)


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


def job_choices(manager: JobManager, owner: str | None) -> list[tuple[str, str]]:
    """The picker's entries for ``owner``'s jobs, newest first: (label, job id)."""
    return [(f"{j['id']} · {j['config']['out']} · {j['status']}", j["id"]) for j in reversed(manager.list(owner))]


def checkpoints_dir(job: dict[str, Any]) -> Path:
    """The folder of a job's checkpoints (a job from before run folders kept them under its model's name)."""
    return train.run_dir(job["config"].get("run") or job["config"]["out"]) / "checkpoints"


def checkpoint_names(job: dict[str, Any]) -> list[str]:
    """A job's checkpoint files, newest first."""
    return [p.name for p in sorted(checkpoints_dir(job).glob("step-*.safetensors"), reverse=True)]


def owned_job(manager: JobManager, job_id: str | None, owner: str | None) -> dict[str, Any]:
    """Job ``job_id``, once checked that it is ``owner``'s (another owner's job is as if it did not exist)."""
    if not job_id:
        raise ValueError("Pick a job first.")
    try:
        return manager.get(job_id, owner)
    except KeyError:
        raise ValueError(NO_JOB) from None


@dataclass(frozen=True)
class Prepared:
    """A data set made from uploads: the report to show, the name it goes by, its contact sheet."""

    report: str
    name: str
    contact: np.ndarray | None


def prepare_data_set(files: list[str] | None, name: str, resolution: int, replace: bool, owner: str | None) -> Prepared:
    """Ingest ``files`` as ``owner``'s data set ``name`` at ``resolution``, and describe what was kept and why not."""
    if not files:
        raise ValueError("Drop some artworks (images or zip archives) first.")
    name = data_set_slug(name) or "my-set"
    try:
        result = data.ingest([Path(f) for f in files], dataset_name(owner, name), resolution, overwrite=bool(replace))
    except data.DatasetExists as e:
        raise ValueError(f"You have a data set called {name!r} already ({e.images} images): tick \"Replace my data "
                         f"set of that name\" to replace it, or choose another name.") from None
    except data.NoUsableImages as e:
        reasons = "; ".join(f"{Path(r.source).name}: {r.reason}" for r in e.rejected[:10])
        raise ValueError(f"None of these files can be used ({reasons}).") from None
    lines = [f"**{len(result.kept)} kept**, {len(result.rejected)} rejected → data set `{name}` at {resolution}px."]
    lines += [f"- `{Path(r.source).name}`: {r.reason}" for r in result.rejected[:50]]
    if result.near_duplicates:
        lines.append(f"\n{len(result.near_duplicates)} kept image(s) look the same as another one (same structure "
                     f"and colours); check they are not copies:")
        lines += [f"- `{Path(n.source).name}` looks like `{Path(n.resembles).name}`" for n in result.near_duplicates[:50]]
    return Prepared("\n".join(lines), name, pixels(result.dataset / "contact.png"))


def start(manager: JobManager, name: str, base: str, out: str, replace: bool, preset: str, custom: dict[str, Any],
          owner: str | None, shared: bool) -> str:
    """Start a fine-tune of ``base`` on ``owner``'s data set ``name`` into model ``out``; the new job's id.

    ``custom``: the Custom preset's settings (steps, batch, lr, loss, augment, freeze_g, freeze_d).
    """
    name = data_set_slug(name)
    stored = dataset_name(owner, name)
    if not name or stored not in data.list_datasets():
        raise ValueError("Prepare a data set first (step 1).")
    out = slug(out) or slug(f"{base}-{name}")
    if out in zoo.model_names():
        if not replace:
            raise ValueError(f"A model called {out!r} exists already: choose another name, or tick \"Replace my "
                             f"model of that name\".")
        mine = any(j["config"]["out"] == out and j["status"] == jobs.FINISHED for j in manager.list(owner))
        if shared and not mine:
            raise ValueError(f"A model called {out!r} exists already and was not made by you: choose another name.")
    if base != "none" and (side := _data_set_resolution(stored)) != (wanted := zoo.model_config(base).resolution):
        raise ValueError(f"Your data set {name!r} is {side} px but {base} draws {wanted} px: prepare it again with "
                         f"{base} picked as the base model.")
    config = _train_config(stored, out, base, bool(replace), preset, custom)
    return manager.submit(config, stored, owner=owner or "")


def _train_config(data_set: str, out: str, base: str, overwrite: bool, preset: str,
                  custom: dict[str, Any]) -> train.TrainConfig:
    """The run a preset (or the Custom settings) makes; ValueError in the config's words for numbers it refuses."""
    settings = PRESETS.get(preset) or {"steps": int(custom["steps"]), "batch": int(custom["batch"]),
                                       "lr": float(custom["lr"]), "loss": custom["loss"], "augment": custom["augment"],
                                       "freeze_g": int(custom["freeze_g"]), "freeze_d": int(custom["freeze_d"])}
    try:
        return train.TrainConfig(data=data_set, out=out, base=base, overwrite=overwrite, **settings)
    except (TypeError, OverflowError) as e:
        raise ValueError(str(e)) from None


def _data_set_resolution(stored: str) -> int:
    """The side of a data set's images, from its manifest (without reading the images)."""
    return int(json.loads((data.dataset_dir(stored) / "manifest.json").read_text())["resolution"])


class StepClock:
    """Seconds per training step measured on this machine, kept per model version and run settings.

    One clock serves every visitor of the tab: a model and settings are timed once (on real steps, see
    ``train.time_steps``), again only when the model's folder changes, and one timing at a time, so two
    never slow each other's figure.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timings: dict[tuple[Any, train.TrainConfig], train.StepTiming] = {}

    def timing(self, config: train.TrainConfig) -> train.StepTiming:
        """The measured timing of ``config``'s run (its model, batch and settings; the step count aside)."""
        identity = None if config.base == "none" else folder_identity(zoo.model_folder(config.base))
        # Steps and learning rate do not change what one step costs: one timing serves every value of them.
        key = (identity, replace(config, steps=1, lr=train.TrainConfig.lr, data="timing", out="timing", run="",
                                 overwrite=False))
        with self._lock:
            if key not in self._timings:
                self._timings[key] = train.time_steps(key[1])
            return self._timings[key]


def estimate(clock: StepClock, base: str, preset: str, custom: dict[str, Any], slow_s: float = SLOW_RUN_S) -> str:
    """Markdown for the artist before a run starts: the measured seconds per step of ``base`` with these
    settings, the run's total, and a warning when that total passes ``slow_s``; or why it cannot run."""
    if not base:
        return ESTIMATE_HINT
    try:
        config = _train_config("timing", "timing", base, False, preset, custom)
        timing = clock.timing(config)
    except (ValueError, zoo.ModelUnavailable) as e:
        return f"**This run cannot start:** {e}"
    total = timing.seconds * config.steps
    on_cpu = timing.device == "cpu"
    how = "" if timing.measured_batch == config.batch else f", scaled from a step of {timing.measured_batch}"
    text = (f"**{timing.seconds:.2f} s per step** measured on this machine's {'CPU' if on_cpu else 'GPU'} "
            f"({base}, batch {config.batch}{how}) · {config.steps:,} steps ≈ {_duration(total)}.")
    if total > slow_s:
        text += (f"\n\n⚠️ **Slow here:** this run would take about {_duration(total)}. Try fewer steps, a smaller "
                 f"batch or more frozen generator blocks{', or fine-tune on a machine with a GPU' if on_cpu else ''}.")
    return text


def _duration(seconds: float) -> str:
    """``seconds`` in words a person reads at a glance: "under a minute", "12 min", "3 h 05 min"."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def base_preview(engine: Engine, files: ImageFiles, base: str) -> str | None:
    """The base model's images for the training previews' fixed seeds and class blend, as a PNG file (None:
    from scratch); every visitor fine-tuning that base is shown the same file."""
    if base == "none":
        return None
    return files.picture(grid(engine.generate(Request(base, train.PREVIEW_SEEDS, precision="fast")), cols=4))


def act(manager: JobManager, action: str, job_id: str | None, owner: str | None) -> None:
    """Cancel or resume ``owner``'s job ``job_id``."""
    owned_job(manager, job_id, owner)
    try:
        getattr(manager, action)(job_id, owner)
    except KeyError as e:
        raise ValueError(str(e)) from None


def save_checkpoint(manager: JobManager, job_id: str | None, chosen: str | None, name: str,
                    owner: str | None) -> str:
    """Save checkpoint ``chosen`` of ``owner``'s job as new model ``name``; the name it got."""
    path = checkpoints_dir(owned_job(manager, job_id, owner)) / (chosen or "")
    if not chosen or not CHECKPOINT_NAME.fullmatch(chosen) or not path.is_file():
        raise ValueError("Pick one of the job's checkpoints.")
    name = slug(name)
    if not name or name in zoo.model_names():
        raise ValueError("Give the model a new name (letters, digits, - and _).")
    train.export_checkpoint(path, name)
    return name


def checkpoint_previews(path: Path) -> np.ndarray:
    """The EMA generator of checkpoint ``path`` drawing the run's preview seeds and class vector, as the run's
    own previews do: ``[len(PREVIEW_SEEDS), H, W, 3]`` uint8.

    Drawn here on the CPU rather than through the engine: the engine caches models by their folder, and a
    checkpoint is no model folder (making one per scrub would write a model's weights each time), while its
    EMA generator is only the model's size and 8 images of it cost what one of the run's preview grids does.
    """
    loaded = train.checkpoint_generator(path)
    config = loaded.model_config
    z = latent.seed_latents(train.PREVIEW_SEEDS, config.z_dim)
    c = latent.class_vector(loaded.run.class_name, config.class_names).expand(len(z), -1) if config.num_classes else None
    with torch.no_grad():
        return to_uint8(loaded.generator(z, c))


@dataclass(frozen=True)
class Scrubbed:
    """One checkpoint shown by the scrubber: its file (what "Save as model" keeps), a caption and its grid."""

    name: str
    caption: str
    grid: np.ndarray


class Scrubber:
    """The preview grids of runs' checkpoints, drawn once per checkpoint file and kept for the last few.

    One serves every visitor of the tab; each call checks the job's owner before anything is drawn or shown.
    """

    def __init__(self, keep: int = SCRUB_CACHE) -> None:
        self._lock = threading.Lock()
        self._grids: dict[tuple[str, int], np.ndarray] = {}
        self._keep = keep

    def view(self, manager: JobManager, job_id: str | None, index: float | None, owner: str | None) -> Scrubbed:
        """Checkpoint ``index`` (0 = the oldest kept; past the end: the newest) of ``owner``'s job ``job_id``."""
        job = owned_job(manager, job_id, owner)
        names = checkpoint_names(job)[::-1]  # oldest first, as the slider runs
        if not names:
            raise ValueError("This job has no checkpoint yet: one is written every few steps while it trains.")
        i = min(max(int(index or 0), 0), len(names) - 1)
        path = checkpoints_dir(job) / names[i]
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except FileNotFoundError:  # pruned by the run since the list was read: the next tick shows the new list
            raise ValueError("That checkpoint was just replaced by a newer one: move the slider again.") from None
        with self._lock:  # one drawing at a time: two on a 2-core CPU would only slow each other
            if key not in self._grids:
                self._grids[key] = grid(checkpoint_previews(path), cols=4)
                while len(self._grids) > self._keep:
                    del self._grids[next(iter(self._grids))]
            shown = self._grids[key]
        step = int(names[i].removeprefix("step-").removesuffix(".safetensors"))
        return Scrubbed(names[i], f"Checkpoint {i + 1} of {len(names)} · step {step:,}", shown)


@dataclass(frozen=True)
class Memorization:
    """Samples beside their nearest training images, and the share that are near-copies."""

    pairs: list[tuple[np.ndarray, str]]
    summary: str


def check_memorization(engine: Engine, manager: JobManager, job_id: str | None, owner: str | None) -> Memorization:
    """Draw samples of a job's model and find each one's nearest image in its data set."""
    job = owned_job(manager, job_id, owner)
    model_name = job["config"]["out"]
    if model_name not in zoo.model_names():
        raise ValueError("The job has no model yet: let it finish, or save a checkpoint as a model.")
    samples = engine.generate(Request(model_name, tuple(range(MEMORIZATION_SAMPLES))))
    real = data.load_dataset(job["data"])
    found = metrics.memorization(samples, real)
    pairs = []
    for sample, index, distance in zip(samples, found.indices.tolist(), found.distances.tolist()):
        copy = " · NEAR-COPY" if distance < found.threshold else ""
        pairs += [(sample, "sample"), (to_uint8(real[index : index + 1])[0], f"nearest {distance:.3f}{copy}")]
    return Memorization(pairs, f"{found.fraction:.0%} of {len(samples)} samples are near-copies of a training "
                               f"image (distance below {found.threshold}).")
