"""Background fine-tune jobs: each in its own worker process, its state in files, queued per device.

A job is a folder ``STUDIO_HOME/jobs/<id>/``:

- ``job.json``: the training config, data set, status, timestamps, error (written by whoever changes
  the status, atomically);
- ``progress.json``: step, losses and SWD history, ETA (written by the worker, atomically);
- ``previews.png``: the latest grid of the EMA generator's fixed seeds;
- ``cancel``: present when the artist asked to stop;
- ``heartbeat``: touched every few seconds by a live worker.

Every job has an owner (the browser that started it; "" from the command line): the UI asks for the
jobs of one owner, and an action on someone else's job is refused as if the job did not exist. Its
checkpoints live in a run folder of its own, named by the job's id.

The web server only reads these files and starts workers (``python -m studio.jobs JOB_DIR``), so a
closed tab or a restarted server loses nothing: a job whose worker is gone, or has stopped beating, is
marked interrupted (at start and while the server runs) and can be resumed from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from studio.storage import atomic_write_bytes, jobs_dir, studio_home

QUEUED, RUNNING, FINISHED, CANCELLED, FAILED, INTERRUPTED = (
    "queued", "running", "finished", "cancelled", "failed", "interrupted")
ACTIVE = (QUEUED, RUNNING)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SWD_EVERY = 50
PROGRESS_EVERY_S = 1.0  # steps between SWD measurements during a job
HEARTBEAT_S = 2.0
# A worker silent this long is taken for dead: far above HEARTBEAT_S, as a loaded machine delays the
# beat (the worker is niced), but short enough that the queue behind it moves on within a minute.
STALE_S = 45.0
INTERRUPTED_MESSAGE = "The worker stopped while this job ran; resume it to continue from its last checkpoint."
JOB_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6,8}")


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())


def _update(path: Path, **changes: Any) -> None:
    _write_json(path, {**read_json(path), **changes})


def read_json(path: Path) -> dict[str, Any]:
    """A job file's document, or {} while it does not exist yet."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _kill_worker(pid: int, folder: Path) -> None:
    """SIGKILL ``pid`` if it is the worker of ``folder`` (a recycled pid may belong to anything else)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return
    if b"studio.jobs" in argv and str(folder).encode() in argv:
        os.kill(pid, signal.SIGKILL)


def process_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs (not a zombie) and is this user's; never on Windows, where probing kills."""
    if os.name == "nt":  # os.kill would end the process there: never probe, count it alive
        return bool(pid)
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a finished child we have not reaped yet is a zombie: not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


class JobManager:
    """Starts, queues, cancels and resumes jobs; one running job per device by default.

    Args:
        max_running: Jobs that may run at once (the worker processes share the device).
        poll_s: How often the scheduler looks for finished or dead workers and queued jobs.
        stale_s: A running job whose worker has not beaten for this long is marked interrupted.
    """

    def __init__(self, max_running: int = 1, poll_s: float = 0.5, stale_s: float = STALE_S) -> None:
        self.max_running = max_running
        self.poll_s = poll_s
        self.stale_s = stale_s
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._closed = threading.Event()
        self._recover(self.list())
        self._thread = threading.Thread(target=self._schedule_loop, name="studio-jobs", daemon=True)
        self._thread.start()

    # -- the artist's actions -------------------------------------------------------------------

    def submit(self, config: Any, data: str, owner: str = "") -> str:
        """Queue a fine-tune of ``config`` (a ``train.TrainConfig``) on data set ``data``; returns the job id.

        The job runs in its own run folder (named by its id) and belongs to ``owner``.

        Raises:
            ValueError: Another queued or running job already writes a model of that name.
        """
        for job in self.list():
            if job["status"] in ACTIVE and job["config"]["out"] == config.out:
                raise ValueError(f"another job is already making a model called {config.out!r}: choose another name")
        job_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)
        config = replace(config, run=job_id)
        doc = {"id": job_id, "owner": owner, "data": data, "config": json.loads(json.dumps(asdict(config))),
               "status": QUEUED, "created": time.time(), "resume": False, "error": None, "pid": None,
               "model_dir": None}
        _write_json(jobs_dir() / job_id / "job.json", doc)
        self._schedule()
        return job_id

    def cancel(self, job_id: str, owner: str | None = None) -> None:
        """Stop a job: a queued one at once, a running one at its next step (it keeps its checkpoints).

        A running job whose worker is already gone is marked cancelled at once.

        Raises:
            KeyError: No such job, or (``owner`` given) not that owner's.
        """
        self.get(job_id, owner)
        folder = jobs_dir() / job_id
        with self._lock:
            doc = read_json(folder / "job.json")
            if doc.get("status") == QUEUED:
                self._set(job_id, status=CANCELLED)
            elif doc.get("status") == RUNNING:
                atomic_write_bytes(folder / "cancel", b"")
                if job_id not in self._procs and not process_alive(doc.get("pid")):
                    self._set(job_id, status=CANCELLED)

    def resume(self, job_id: str, owner: str | None = None) -> None:
        """Queue a cancelled, interrupted or failed job again, to continue from its last checkpoint.

        Raises:
            KeyError: No such job, or (``owner`` given) not that owner's.
            ValueError: The job is not stopped.
        """
        self.get(job_id, owner)
        with self._lock:
            doc = read_json(jobs_dir() / job_id / "job.json")
            if doc.get("status") not in (CANCELLED, INTERRUPTED, FAILED):
                raise ValueError(f"job {job_id} is {doc.get('status', 'unknown')}: only a stopped job can resume")
            (jobs_dir() / job_id / "cancel").unlink(missing_ok=True)
            self._set(job_id, status=QUEUED, resume=True, error=None)
        self._schedule()

    def get(self, job_id: str, owner: str | None = None) -> dict[str, Any]:
        """A job's document, with its progress and queue position merged in.

        Raises:
            KeyError: No such job, or (``owner`` given) not that owner's: the two read the same, so
                nobody learns which ids exist.
        """
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise KeyError("no such job")
        folder = jobs_dir() / job_id
        doc = read_json(folder / "job.json")
        if not doc or (owner is not None and doc.get("owner", "") != owner):
            raise KeyError("no such job")
        doc["progress"] = read_json(folder / "progress.json")
        doc["previews"] = str(folder / "previews.png") if (folder / "previews.png").is_file() else None
        queued = [j["id"] for j in self.list() if j["status"] == QUEUED]
        doc["queue_position"] = queued.index(job_id) + 1 if job_id in queued else None
        return doc

    def list(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Every job's ``job.json`` (``owner`` given: that owner's only), oldest first."""
        root = jobs_dir()
        docs = [read_json(p / "job.json") for p in sorted(root.iterdir())] if root.is_dir() else []
        return [d for d in docs if d and (owner is None or d.get("owner", "") == owner)]

    def close(self) -> None:
        """Stop scheduling (running workers go on; a new manager adopts or marks them)."""
        self._closed.set()
        self._thread.join(timeout=5)

    # -- scheduling -----------------------------------------------------------------------------

    def _set(self, job_id: str, **changes: Any) -> None:
        _update(jobs_dir() / job_id / "job.json", **changes)

    def _recover(self, jobs: list[dict[str, Any]]) -> bool:
        """Mark interrupted every running job of ``jobs`` whose worker is gone or silent for ``stale_s``.

        Runs at start (after a restart) and on every scheduling pass, so a worker that dies under a
        previous server's watch (which this manager cannot ``poll``) or hangs does not hold the queue.

        Returns:
            Whether any job changed.
        """
        changed = False
        for job in jobs:
            if job["status"] != RUNNING:
                continue
            folder = jobs_dir() / job["id"]
            try:
                beat = (folder / "heartbeat").stat().st_mtime
            except FileNotFoundError:
                beat = job.get("started") or job["created"]
            fresh = time.time() - beat < self.stale_s
            own, pid = self._procs.get(job["id"]), job.get("pid")
            if own is not None:
                alive = own.poll() is None
            else:  # no pid yet: another manager is starting the worker this moment
                alive = process_alive(pid) if pid else fresh
            if alive and fresh:
                continue
            if alive and own is not None:  # hung: stopped, so it cannot write after it was given up
                own.kill()
            elif alive:
                _kill_worker(pid, folder)
            status = CANCELLED if (folder / "cancel").exists() else INTERRUPTED
            self._set(job["id"], status=status, error=None if status == CANCELLED else INTERRUPTED_MESSAGE)
            changed = True
        return changed

    def _schedule_loop(self) -> None:
        while not self._closed.wait(self.poll_s):
            self._schedule()

    def _schedule(self) -> None:
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                if proc.poll() is not None:
                    del self._procs[job_id]
                    doc = read_json(jobs_dir() / job_id / "job.json")
                    if doc.get("status") == RUNNING:  # the worker died without saying how
                        self._set(job_id, status=FAILED, error=f"The worker process exited with code "
                                  f"{proc.returncode} before finishing; its checkpoints are kept.")
            jobs = self.list()
            if self._recover(jobs):
                jobs = self.list()
            running = sum(j["status"] == RUNNING for j in jobs)
            for job in jobs:
                if running >= self.max_running:
                    break
                if job["status"] == QUEUED:
                    self._start(job["id"])
                    running += 1

    def _start(self, job_id: str) -> None:
        folder = jobs_dir() / job_id
        # Marked running before the worker starts, so a worker that fails at once is not overwritten.
        self._set(job_id, status=RUNNING, started=time.time())
        log = open(folder / "worker.log", "ab")  # noqa: SIM115 (the child process owns it from here)
        # Run from the project root so ``-m studio.jobs`` resolves whatever the server's working directory.
        proc = subprocess.Popen([sys.executable, "-m", "studio.jobs", str(folder)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                                env={**os.environ, "STUDIO_HOME": str(studio_home())})
        log.close()
        self._procs[job_id] = proc
        self._set(job_id, pid=proc.pid)


# -- the worker process -------------------------------------------------------------------------------


def run_worker(folder: Path) -> int:
    """Run the job in ``folder`` to its end, recording progress; returns the process exit status."""
    from studio import data, metrics, train
    from studio.media import grid, save_png

    # Training yields the CPU to the web server, so the studio stays responsive while a job runs.
    os.nice(10)
    path = folder / "job.json"
    job = read_json(path)

    try:
        config = train.TrainConfig.from_dict(job["config"])
        if not config.run:  # a job from before run folders kept its checkpoints under the model's name
            config = replace(config, run=config.out)
        images = data.load_dataset(job["data"])
        # A resumed job carries on its curves up to the checkpoint it restarts from (the steps after it
        # are trained again); a fresh one starts them.
        progress = read_json(folder / "progress.json") if job.get("resume") else {}
        checkpoint = train.latest_checkpoint(config.run) if job.get("resume") else None
        resumed_at = int(checkpoint.stem.split("-")[1]) if checkpoint else 0
        history = [h for h in progress.get("history", []) if h["step"] <= resumed_at]
        swd = [h for h in progress.get("swd", []) if h["step"] <= resumed_at]
        tracker = metrics.SWDTracker(images, metrics.TRACKING_SAMPLES, swd)
        started, first_step = time.monotonic(), None

        latest: dict[str, Any] = {}
        written = 0.0

        def on_progress(step: int, total: int, losses: dict[str, float], previews: np.ndarray | None) -> None:
            nonlocal first_step, written
            first_step = step if first_step is None else first_step
            history.append({"step": step, **losses})
            if previews is not None:
                save_png(folder / "previews.png", grid(previews, cols=4))
            rate = (time.monotonic() - started) / (step - first_step + 1)
            latest.update({"step": step, "total": total, "losses": losses, "eta_s": rate * (total - step),
                           "s_per_step": rate})
            # The whole history is rewritten each time: at most once a second (and at the end), so a
            # long run's file writes stay linear in its length, not quadratic.
            checkpoint_next = step % config.checkpoint_every == 0  # its curve is on disk before it
            if (time.monotonic() - written >= PROGRESS_EVERY_S or step == total or previews is not None
                    or checkpoint_next):
                flush()
                written = time.monotonic()

        def flush() -> None:
            if latest:
                _write_json(folder / "progress.json", {**latest, "history": history, "swd": tracker.history})

        result = train.finetune(config, images, on_progress, lambda: (folder / "cancel").exists(),
                                resume=bool(job.get("resume")), lineage=tracker.lineage,
                                sample_every=SWD_EVERY, sample_fn=tracker, samples=metrics.TRACKING_SAMPLES)
        flush()
    except Exception as e:  # anything: the artist reads it in the UI, the traceback goes to the log
        traceback.print_exc()
        _update(path, status=FAILED, error=f"{type(e).__name__}: {e}")
        return 1
    if result.status == "stopped":
        _update(path, status=CANCELLED, step=result.step)
    else:
        _update(path, status=FINISHED, step=result.step, model_dir=str(result.model_dir), finished=time.time())
    return 0


def _beat(folder: Path) -> None:
    """Touch ``folder/heartbeat`` every ``HEARTBEAT_S`` for as long as the process lives."""
    path = folder / "heartbeat"
    while True:
        path.touch()
        time.sleep(HEARTBEAT_S)


def worker_main() -> None:
    """``python -m studio.jobs JOB_DIR``: the worker process entry point."""
    folder = Path(sys.argv[1])
    # A thread, not the training loop: one step (or loading the data) can take longer than a beat.
    threading.Thread(target=_beat, args=(folder,), name="studio-heartbeat", daemon=True).start()
    sys.exit(run_worker(folder))


if __name__ == "__main__":
    worker_main()
