"""The Fine-tune tab's callbacks, without a browser: names, data sets, owners' jobs, checkpoints, and the
seconds per step measured before a run starts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from studio import data, jobs, latent, train, zoo
from studio.media import grid, to_uint8
from studio.models.folder import build_generator
from studio.storage import MAX_NAME_LENGTH, check_name
from studio.ui import finetune_logic as logic
from studio.ui.owners import dataset_name, new_owner
from tests.conftest import make_tiny_model, noise_artworks
from tests.test_stylegan2_import import write_snapshot

ALICE, BOB = new_owner(None), new_owner(None)
QUICK = {"steps": 1, "batch": 2, "lr": 2e-4, "loss": "logistic", "augment": "off", "freeze_g": 0, "freeze_d": 0}


@pytest.fixture
def manager(tiny: str) -> Iterator[jobs.JobManager]:
    """A manager that queues jobs but runs none, so a test sees them as their owners left them."""
    m = jobs.JobManager(max_running=0, poll_s=0.1)
    yield m
    m.close()


@pytest.mark.parametrize("text", ["My prints!", "../../etc", " .hidden", "ünïcode çafé", "a" * 300, "x.y/z"])
def test_slugs_are_names_the_one_name_rule_accepts(text: str) -> None:
    name = logic.slug(text)
    assert check_name(name) == name
    stored = dataset_name(ALICE, logic.data_set_slug(text))
    assert check_name(stored, "data set") == stored and len(stored) <= MAX_NAME_LENGTH


def test_prepare_makes_the_owners_data_set_and_refuses_a_second_one(manager: jobs.JobManager, tmp_path: Path) -> None:
    files = noise_artworks(tmp_path, 4)
    made = logic.prepare_data_set(files, "my prints", 32, False, ALICE)
    assert made.name == "my-prints" and made.report.startswith("**4 kept**, 0 rejected")
    assert made.contact is not None and made.contact.ndim == 3
    assert data.list_datasets() == [dataset_name(ALICE, "my-prints")]
    with pytest.raises(ValueError, match="You have a data set called 'my-prints' already \\(4 images\\)"):
        logic.prepare_data_set(files, "my-prints", 32, False, ALICE)
    with pytest.raises(ValueError, match="Drop some artworks"):
        logic.prepare_data_set([], "x", 32, False, ALICE)


def test_jobs_are_seen_and_acted_on_by_their_owner_only(manager: jobs.JobManager, tmp_path: Path) -> None:
    logic.prepare_data_set(noise_artworks(tmp_path, 4), "set", 32, False, ALICE)
    with pytest.raises(ValueError, match="Prepare a data set first"):
        logic.start(manager, "set", "tiny", "mine", False, "Custom", QUICK, BOB, shared=True)
    job_id = logic.start(manager, "set", "tiny", "", False, "Custom", QUICK, ALICE, shared=True)
    job = logic.owned_job(manager, job_id, ALICE)
    assert job["config"]["out"] == "tiny-set" and job["config"]["steps"] == 1
    assert [value for _, value in logic.job_choices(manager, ALICE)] == [job_id]
    assert logic.job_choices(manager, BOB) == []
    for action in ("cancel", "resume"):
        with pytest.raises(ValueError, match=logic.NO_JOB):
            logic.act(manager, action, job_id, BOB)
    logic.act(manager, "cancel", job_id, ALICE)
    assert manager.get(job_id)["status"] == jobs.CANCELLED
    with pytest.raises(ValueError, match="Pick a job first"):
        logic.owned_job(manager, None, ALICE)


def test_an_existing_model_is_replaced_only_when_asked_and_only_by_its_maker(manager: jobs.JobManager,
                                                                            tmp_path: Path) -> None:
    logic.prepare_data_set(noise_artworks(tmp_path, 4), "set", 32, False, ALICE)
    with pytest.raises(ValueError, match="A model called 'tiny' exists already: choose another name, or tick"):
        logic.start(manager, "set", "tiny", "tiny", False, "Quick", {}, ALICE, shared=True)
    with pytest.raises(ValueError, match="was not made by you"):
        logic.start(manager, "set", "tiny", "tiny", True, "Quick", {}, ALICE, shared=True)


def test_only_a_jobs_own_checkpoints_can_be_saved(manager: jobs.JobManager, tmp_path: Path) -> None:
    logic.prepare_data_set(noise_artworks(tmp_path, 4), "set", 32, False, ALICE)
    job_id = logic.start(manager, "set", "tiny", "out", False, "Custom", QUICK, ALICE, shared=True)
    folder = logic.checkpoints_dir(manager.get(job_id))
    folder.mkdir(parents=True)
    for name in ("step-0000001.safetensors", "step-0000002.safetensors"):
        (folder / name).write_bytes(b"")
    assert logic.checkpoint_names(manager.get(job_id)) == ["step-0000002.safetensors", "step-0000001.safetensors"]
    for chosen in (None, "../../models/tiny/model.safetensors", "step-0000009.safetensors"):
        with pytest.raises(ValueError, match="Pick one of the job's checkpoints"):
            logic.save_checkpoint(manager, job_id, chosen, "new", ALICE)
    with pytest.raises(ValueError, match="Give the model a new name"):
        logic.save_checkpoint(manager, job_id, "step-0000001.safetensors", "tiny", ALICE)
    with pytest.raises(ValueError, match=logic.NO_JOB):
        logic.save_checkpoint(manager, job_id, "step-0000001.safetensors", "new", BOB)


def test_progress_reads_step_status_and_eta() -> None:
    job = {"status": jobs.RUNNING, "config": {"steps": 600}, "progress": {"step": 150, "total": 600, "eta_s": 3725,
                                                                        "s_per_step": 0.5}}
    html = logic.progress_html(job)
    assert "width:25.0%" in html and "step 150 / 600" in html and "ETA 1:02:05" in html
    assert "No fine-tune yet" in logic.progress_html(None)
    losses, swd = logic.curves({"progress": {"history": [{"step": 1, "d": 0.5, "g": 2.0}], "swd": [[1, 30.0]]}})
    assert losses.to_dict("records") == [{"step": 1, "loss": "d", "value": 0.5}, {"step": 1, "loss": "g", "value": 2.0}]
    assert swd.to_dict("records") == [{"step": 1, "swd": 30.0}]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread: on a machine shared with other work, two threads waiting on each other make a
    step's time swing tenfold, one thread's by less than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_seconds_per_step_are_measured_per_model_and_batch_and_a_slow_run_is_announced(home: Path,
                                                                                       one_thread: None) -> None:
    make_tiny_model(home, "small", resolution=32)
    make_tiny_model(home, "large", resolution=128)
    clock = logic.StepClock()
    settings = {**QUICK, "steps": 500}
    small, large = (clock.timing(train.TrainConfig(data="d", out="o", base=name, **settings))
                    for name in ("small", "large"))
    assert large.seconds > small.seconds > 0  # a real measurement: 16 times the pixels cost more
    same = clock.timing(train.TrainConfig(data="other", out="other", base="small", **{**settings, "steps": 9, "lr": 1}))
    assert same is small  # cached: steps and learning rate do not change a step's cost
    assert clock.timing(train.TrainConfig(data="d", out="o", base="small", **{**settings, "batch": 4})) is not small
    make_tiny_model(home, "small", seed=1, resolution=32)  # a new version of the model is timed afresh
    assert clock.timing(train.TrainConfig(data="d", out="o", base="small", **settings)) is not small

    total = large.seconds * 500
    quiet = logic.estimate(clock, "large", "Custom", settings, slow_s=total * 2)
    assert f"{large.seconds:.2f} s per step" in quiet and "500 steps" in quiet and "Slow" not in quiet
    warned = logic.estimate(clock, "large", "Custom", settings, slow_s=total / 2)
    assert warned.startswith(quiet) and "Slow here" in warned and "GPU" in warned
    assert logic.estimate(clock, "", "Quick", {}) == logic.ESTIMATE_HINT
    assert "cannot start" in logic.estimate(clock, "no-such-model", "Quick", {})


def test_a_stylegan2_batch_that_its_discriminator_cannot_group_is_refused_before_the_run(home: Path,
                                                                                         tmp_path: Path) -> None:
    write_snapshot(tmp_path / "network-snapshot.pkl")
    zoo.import_file(tmp_path / "network-snapshot.pkl", "sg")
    clock = logic.StepClock()
    refused = logic.estimate(clock, "sg", "Custom", {**QUICK, "batch": 6})
    assert refused.startswith("**This run cannot start:**") and "multiple of 4, not 6" in refused
    assert "s per step" in logic.estimate(clock, "sg", "Custom", {**QUICK, "batch": 4})


def test_a_data_set_of_another_resolution_is_refused_before_the_job(manager: jobs.JobManager, tmp_path: Path) -> None:
    logic.prepare_data_set(noise_artworks(tmp_path, 4), "big", 64, False, ALICE)
    with pytest.raises(ValueError, match="Your data set 'big' is 64 px but tiny draws 32 px: prepare it again"):
        logic.start(manager, "big", "tiny", "out", False, "Custom", QUICK, ALICE, shared=True)
    assert manager.list() == []


def run_job(manager: jobs.JobManager, job_id: str, **settings: object) -> list[np.ndarray]:
    """Train job ``job_id``'s run here (a real tiny fine-tune into the job's own run folder); the preview grids
    its progress reports carried."""
    job = manager.get(job_id)
    config = replace(train.TrainConfig.from_dict(job["config"]), **settings)
    shown: list[np.ndarray] = []
    train.finetune(config, data.load_dataset(job["data"]),
                   progress_fn=lambda step, total, losses, previews: shown.append(previews) if previews is not None
                   else None)
    return shown


def direct_grid(path: Path, class_names: tuple[str, ...]) -> np.ndarray:
    """The preview seeds' grid computed here from checkpoint ``path``'s EMA generator state."""
    tensors, _ = train.load_training_state(path)
    g = build_generator(zoo.model_config("tiny"))
    g.load_state_dict({k[len("G_ema."):]: v for k, v in tensors.items() if k.startswith("G_ema.")})
    z = latent.seed_latents(train.PREVIEW_SEEDS, g.config.z_dim)
    c = torch.full((len(z), len(class_names)), 1 / len(class_names))  # the run's class vector: the uniform blend
    with torch.no_grad():
        return grid(to_uint8(g.eval()(z, c)), cols=4)


@pytest.mark.slow
def test_the_scrubber_shows_each_checkpoints_own_images_and_saves_the_chosen_one(manager: jobs.JobManager,
                                                                                 tmp_path: Path) -> None:
    logic.prepare_data_set(noise_artworks(tmp_path, 4), "set", 32, False, ALICE)
    job_id = logic.start(manager, "set", "tiny", "scrubbed", False, "Custom", {**QUICK, "lr": 0.01}, ALICE,
                         shared=True)
    shown = run_job(manager, job_id, steps=6, checkpoint_every=2, keep_checkpoints=5, preview_every=6)
    scrubber = logic.Scrubber()
    views = [scrubber.view(manager, job_id, i, ALICE) for i in range(3)]
    assert [v.name for v in views] == [f"step-000000{s}.safetensors" for s in (2, 4, 6)]
    assert views[0].caption == "Checkpoint 1 of 3 · step 2"
    folder = logic.checkpoints_dir(manager.get(job_id))
    for view in views:
        np.testing.assert_array_equal(view.grid, direct_grid(folder / view.name, zoo.model_config("tiny").class_names))
    assert not np.array_equal(views[0].grid, views[2].grid)  # the style arriving
    np.testing.assert_array_equal(views[2].grid, grid(shown[-1], cols=4))  # what the run itself showed last
    assert scrubber.view(manager, job_id, 99, ALICE).name == views[2].name  # past the end: the newest
    assert scrubber.view(manager, job_id, 1, ALICE).grid is views[1].grid  # drawn once
    with pytest.raises(ValueError, match=logic.NO_JOB):
        scrubber.view(manager, job_id, 0, BOB)

    assert logic.save_checkpoint(manager, job_id, views[0].name, "early", ALICE) == "early"
    saved = zoo.load("early")
    assert saved.config.lineage["checkpoint"] == views[0].name and saved.config.lineage["steps"] == 2
    z = latent.seed_latents(train.PREVIEW_SEEDS, saved.config.z_dim)
    with torch.no_grad():
        drawn = to_uint8(saved.generator(z, torch.full((len(z), 3), 1 / 3)))
    np.testing.assert_array_equal(grid(drawn, cols=4), views[0].grid)


def test_the_scrubber_says_when_a_job_has_no_checkpoint_yet(manager: jobs.JobManager, tmp_path: Path) -> None:
    logic.prepare_data_set(noise_artworks(tmp_path, 4), "set", 32, False, ALICE)
    job_id = logic.start(manager, "set", "tiny", "out", False, "Custom", QUICK, ALICE, shared=True)
    with pytest.raises(ValueError, match="This job has no checkpoint yet"):
        logic.Scrubber().view(manager, job_id, 0, ALICE)
    with pytest.raises(ValueError, match="Pick a job first"):
        logic.Scrubber().view(manager, None, 0, ALICE)
