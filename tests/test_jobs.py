"""Background fine-tune jobs in real worker processes: finish, cancel, restart, crash."""

import json
import os
import signal
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio import data, jobs, storage, train, zoo

pytestmark = pytest.mark.slow


def make_dataset(tmp_path: Path, name: str = "prints", n: int = 12) -> str:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        path = tmp_path / f"art{i}.png"
        ramp = np.linspace(0, 255, 48, dtype=np.float32)
        img = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (48, 1)), np.full((48, 48), 40 * (i % 5))], -1)
        Image.fromarray((img + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)).save(path)
        files.append(path)
    data.ingest(files, name, resolution=32)
    return name


def wait_for(manager: jobs.JobManager, job_id: str, done, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = manager.get(job_id)
        if done(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"timed out; last state {manager.get(job_id)}")


def settled(job: dict) -> bool:
    return job["status"] not in jobs.ACTIVE


@pytest.fixture
def manager(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # a server started from anywhere still finds the worker module
    m = jobs.JobManager(poll_s=0.2)
    yield m
    m.close()


def config(tiny: str, out: str, steps: int, **kwargs) -> train.TrainConfig:
    return train.TrainConfig(data="prints", out=out, base=tiny, steps=steps, batch=4, checkpoint_every=5,
                             preview_every=5, **kwargs)


def test_a_job_runs_in_a_worker_and_its_model_becomes_pickable(tiny: str, tmp_path: Path, manager) -> None:
    make_dataset(tmp_path)
    job_id = manager.submit(config(tiny, "learned", 12), "prints")
    job = wait_for(manager, job_id, settled)
    assert job["status"] == jobs.FINISHED, job
    assert job["pid"] != os.getpid()  # trained in another process
    lineage = zoo.model_config("learned").lineage
    assert "learned" in zoo.model_names() and lineage["dataset"] == "prints"
    assert lineage["swd"] == job["progress"]["swd"][-1]["swd"]
    progress = job["progress"]
    assert progress["step"] == 12 and [h["step"] for h in progress["history"]] == list(range(1, 13))
    assert progress["swd"] and progress["swd"][-1]["step"] == 12 and progress["swd"][-1]["swd"] > 0
    assert Image.open(job["previews"]).size == (4 * 32 + 3 * 2, 2 * 32 + 2)  # the 8 preview seeds, 4 a row


def test_queued_jobs_wait_their_turn_and_cancel_stops_a_running_one(tiny: str, tmp_path: Path, manager) -> None:
    make_dataset(tmp_path)
    first = manager.submit(config(tiny, "long", train.MAX_STEPS), "prints")
    second = manager.submit(config(tiny, "next", 5), "prints")
    wait_for(manager, first, lambda j: j["status"] == jobs.RUNNING and j["progress"].get("step", 0) >= 6)
    assert manager.get(second)["status"] == jobs.QUEUED and manager.get(second)["queue_position"] == 1
    asked = time.monotonic()
    manager.cancel(first)
    stopped = wait_for(manager, first, settled, timeout=30)
    assert stopped["status"] == jobs.CANCELLED and time.monotonic() - asked < 10
    assert train.latest_checkpoint(first) is not None  # its work is kept
    assert "long" not in zoo.model_names()
    done = wait_for(manager, second, settled)  # the queue moves on
    assert done["status"] == jobs.FINISHED


def test_a_restarted_manager_marks_the_job_interrupted_and_resumes_it(tiny: str, tmp_path: Path, home: Path) -> None:
    make_dataset(tmp_path)
    first = jobs.JobManager(poll_s=0.2)
    job_id = first.submit(config(tiny, "survivor", 60), "prints")
    job = wait_for(first, job_id, lambda j: j["progress"].get("step", 0) >= 11)
    first.close()
    os.kill(job["pid"], signal.SIGKILL)  # the server and its worker die together
    first._procs[job_id].wait(timeout=30)  # gone for good (and reaped) before the new manager looks

    second = jobs.JobManager(poll_s=0.2)
    try:
        interrupted = second.get(job_id)
        assert interrupted["status"] == jobs.INTERRUPTED and "resume" in interrupted["error"]
        checkpoint = train.latest_checkpoint(job_id)
        assert checkpoint is not None and int(checkpoint.stem.split("-")[1]) >= 10
        second.resume(job_id)
        done = wait_for(second, job_id, settled)
        assert done["status"] == jobs.FINISHED and done["progress"]["step"] == 60
        steps = [h["step"] for h in done["progress"]["history"]]
        assert steps == list(range(1, 61))  # the curve runs on from the checkpoint without repeats
    finally:
        second.close()


def test_every_checkpoint_finds_its_steps_already_in_the_progress_file(
        tiny: str, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker killed just after a checkpoint resumes from it; the curve must already reach that step,
    # however rarely the progress file is written otherwise.
    make_dataset(tmp_path)
    monkeypatch.setattr(jobs, "PROGRESS_EVERY_S", 1e9)
    folder = jobs_dir_with(config(tiny, "steady", 12))
    recorded: dict[int, int] = {}
    save = train.Run.save_checkpoint

    def watched(run: train.Run, where: Path) -> Path:
        recorded[run.step] = max(h["step"] for h in jobs.read_json(folder / "progress.json")["history"])
        return save(run, where)

    monkeypatch.setattr(train.Run, "save_checkpoint", watched)
    monkeypatch.setattr(jobs.os, "nice", lambda _: 0)  # the in-process worker must not slow the suite down
    assert jobs.run_worker(folder) == 0
    assert sorted(recorded) == [5, 10, 12] and all(recorded[step] >= step for step in (5, 10))


def jobs_dir_with(train_config: train.TrainConfig) -> Path:
    """A job folder as ``JobManager.submit`` writes it, for running the worker in this process."""
    folder = storage.jobs_dir() / "in-process"
    folder.mkdir(parents=True)
    doc = {"id": "in-process", "data": "prints", "config": asdict(replace(train_config, run="in-process")),
           "status": jobs.RUNNING, "resume": False}
    (folder / "job.json").write_text(json.dumps(doc))
    return folder


def test_a_crashing_job_reports_its_error_and_keeps_its_checkpoints(tiny: str, tmp_path: Path, manager) -> None:
    make_dataset(tmp_path)
    job_id = manager.submit(config(tiny, "fragile", train.MAX_STEPS), "prints")
    wait_for(manager, job_id, lambda j: j["progress"].get("step", 0) >= 6)
    manager.cancel(job_id)
    wait_for(manager, job_id, settled)
    kept = sorted(p.name for p in (train.run_dir(job_id) / "checkpoints").iterdir())
    # The data set disappears; resuming then fails inside the worker.
    data.dataset_dir("prints").joinpath("manifest.json").unlink()
    manager.resume(job_id)
    failed = wait_for(manager, job_id, settled)
    assert failed["status"] == jobs.FAILED
    assert "no data set named 'prints'" in failed["error"]
    assert sorted(p.name for p in (train.run_dir(job_id) / "checkpoints").iterdir()) == kept


def test_two_jobs_for_one_model_name_are_refused(tiny: str, tmp_path: Path, manager) -> None:
    make_dataset(tmp_path)
    manager.submit(config(tiny, "twin", train.MAX_STEPS), "prints")
    with pytest.raises(ValueError, match="already making a model called 'twin'"):
        manager.submit(config(tiny, "twin", 5), "prints")
    for job in manager.list():
        manager.cancel(job["id"])


def test_a_worker_that_dies_under_a_restarted_server_is_noticed_and_the_queue_moves_on(
        tiny: str, tmp_path: Path, home: Path) -> None:
    make_dataset(tmp_path)
    first = jobs.JobManager(poll_s=0.2)
    job_id = first.submit(config(tiny, "orphan", train.MAX_STEPS), "prints")
    job = wait_for(first, job_id, lambda j: j["progress"].get("step", 0) >= 2)
    first.close()  # the server restarts; its worker goes on
    second = jobs.JobManager(poll_s=0.2)
    try:
        assert second.get(job_id)["status"] == jobs.RUNNING  # adopted: still alive
        behind = second.submit(config(tiny, "behind", 5), "prints")
        assert second.get(behind)["status"] == jobs.QUEUED
        os.kill(job["pid"], signal.SIGKILL)  # then the worker dies while the new server runs
        dead = wait_for(second, job_id, settled, timeout=30)
        assert dead["status"] == jobs.INTERRUPTED and "resume" in dead["error"]
        assert wait_for(second, behind, settled)["status"] == jobs.FINISHED  # the queue moved on
    finally:
        second.close()
        first._procs[job_id].wait(timeout=30)


def test_a_hung_worker_is_stopped_and_marked_interrupted(tiny: str, tmp_path: Path, home: Path) -> None:
    make_dataset(tmp_path)
    manager = jobs.JobManager(poll_s=0.2, stale_s=3)
    try:
        job_id = manager.submit(config(tiny, "frozen", train.MAX_STEPS), "prints")
        job = wait_for(manager, job_id, lambda j: j["progress"].get("step", 0) >= 2)
        os.kill(job["pid"], signal.SIGSTOP)  # alive, but no longer beating
        hung = wait_for(manager, job_id, settled, timeout=30)
        assert hung["status"] == jobs.INTERRUPTED
        assert manager._procs.get(job_id) is None or manager._procs[job_id].wait(timeout=10) == -signal.SIGKILL
    finally:
        manager.close()


def test_cancel_of_a_job_whose_worker_is_gone_ends_it_at_once(tiny: str, tmp_path: Path, home: Path) -> None:
    make_dataset(tmp_path)
    first = jobs.JobManager(poll_s=0.2)
    job_id = first.submit(config(tiny, "gone", train.MAX_STEPS), "prints")
    job = wait_for(first, job_id, lambda j: j["progress"].get("step", 0) >= 2)
    first.close()
    second = jobs.JobManager(poll_s=60)  # its scheduler will not look again during this test
    try:
        os.kill(job["pid"], signal.SIGKILL)
        first._procs[job_id].wait(timeout=30)
        second.cancel(job_id)
        assert second.get(job_id)["status"] == jobs.CANCELLED
    finally:
        second.close()


def test_a_job_is_seen_and_acted_on_by_its_owner_only(tiny: str, tmp_path: Path, manager) -> None:
    make_dataset(tmp_path)
    job_id = manager.submit(config(tiny, "alices", train.MAX_STEPS), "prints", owner="alice")
    assert [j["id"] for j in manager.list(owner="alice")] == [job_id]
    assert manager.list(owner="bob") == [] and manager.list(owner="") == []
    for act in (manager.get, manager.cancel, manager.resume):
        with pytest.raises(KeyError, match="no such job"):
            act(job_id, owner="bob")
    with pytest.raises(KeyError, match="no such job"):
        manager.get("../../etc", owner="alice")
    assert manager.get(job_id, owner="alice")["status"] in jobs.ACTIVE  # bob's cancel did nothing
    assert not (storage.jobs_dir() / job_id / "cancel").exists()
    manager.cancel(job_id, owner="alice")
    assert wait_for(manager, job_id, settled)["status"] == jobs.CANCELLED


class Worker:
    """Stands in for a worker process: it records the job it was started for, and runs until the test ends."""

    def __init__(self, argv: list[str], started: list[str]) -> None:
        self.pid = os.getpid()
        started.append(Path(argv[-1]).name)

    def poll(self) -> int | None:
        return None

    def kill(self) -> None:
        pass


class LockstepManager(jobs.JobManager):
    """A manager whose job listings, once ``meeting`` is set, wait for another thread's listing (or its timeout)."""

    meeting: threading.Barrier | None = None

    def list(self, owner: str | None = None) -> list[dict]:
        docs = super().list(owner)
        if self.meeting is not None:
            try:
                self.meeting.wait()
            except threading.BrokenBarrierError:  # no other thread listed meanwhile: go on alone
                pass
        return docs


def test_two_submits_at_once_start_one_worker(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    monkeypatch.setattr(jobs.subprocess, "Popen", lambda argv, **kwargs: Worker(argv, started))
    manager = LockstepManager(max_running=1, poll_s=3600)
    manager.meeting = threading.Barrier(2, timeout=1.0)
    # The two scheduling passes list the jobs in lockstep, each after writing its own: without the manager's
    # lock both see none running and each starts a worker (of max_running=1). With it the second pass waits
    # for the first, and finds a job running.
    ids: list[str] = []
    submits = [threading.Thread(target=lambda out=out: ids.append(manager.submit(config("tiny", out, 10), "prints")))
               for out in ("mine", "theirs")]
    for t in submits:
        t.start()
    for t in submits:
        t.join(30)
    manager.close()
    assert len(ids) == 2 and len(started) == 1
    (running,), (queued,) = started, set(ids) - set(started)
    assert (manager.get(running)["status"], manager.get(queued)["status"]) == (jobs.RUNNING, jobs.QUEUED)
