"""``python -m studio bench api``: a launched studio under many API clients, measured end to end.

The bench starts a real studio (``python -m studio serve``) and drives its public ``/draw`` endpoint
through ``gradio_client`` from separate client processes, each running several client threads with a
``Client`` of their own. Every client walks through seeds no other call of the run draws. Each image
returned is checked: its recipe chunk must be the recipe sent, and after the run its pixels must equal
the image the command line draws for that seed (``python -m studio generate`` goes through an
``Engine`` the same way). For each client count it reports throughput, latency, errors, busy
refusals, the server process's CPU time per image and the engine's own counters over the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import queue
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from studio import zoo
from studio.recipe import PNG_KEY, Recipe, request_for
from studio.storage import atomic_write_bytes, studio_home, temporary_home

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180.0
CALL_TIMEOUT_S = 120.0  # the longest one call (or a client's connection) may take
BUSY_MARKS = ("studio is busy", "queue is full")  # the engine's refusal and a full Gradio queue
TRUNCATION = 0.8  # the Explore tab's first image uses it too: the everyday request
RUN_SEEDS = 10_000_000  # seeds set aside for each run: runs never draw each other's images


@dataclass(frozen=True)
class Plan:
    """What every client of one run draws.

    Attributes:
        url: The studio's address.
        template: The recipe every call sends, with its seed replaced (weights hash included).
        first_seed: Client ``g`` of ``C`` draws seeds ``first_seed + g``, ``+ g + C``, ``+ g + 2C``...
        seconds: How long clients keep sending new calls.
    """

    url: str
    template: Recipe
    first_seed: int
    seconds: float

    def recipe_json(self, seed: int) -> str:
        """The recipe JSON the call for ``seed`` sends."""
        return replace(self.template, seed=seed).to_json()


@dataclass
class Tally:
    """What the clients of one process saw."""

    latencies: list[float] = field(default_factory=list)  # seconds, timed calls that returned an image
    drawn: list[tuple[int, str]] = field(default_factory=list)  # (seed, pixel digest) of every image returned
    wrong_recipes: list[int] = field(default_factory=list)  # seeds whose PNG did not carry the recipe sent
    errors: int = 0
    busy: int = 0
    error_messages: list[str] = field(default_factory=list)  # the first few, to say what went wrong
    last_done: float = 0.0  # time.monotonic() when this process's last timed call returned
    cpu_s: float = 0.0  # this client process's own CPU time during the run

    def merge(self, other: Tally) -> None:
        """Add ``other``'s counts to this tally."""
        self.latencies += other.latencies
        self.drawn += other.drawn
        self.wrong_recipes += other.wrong_recipes
        self.errors += other.errors
        self.busy += other.busy
        self.error_messages = (self.error_messages + other.error_messages)[:5]
        self.last_done = max(self.last_done, other.last_done)
        self.cpu_s += other.cpu_s


# -- the studio under test ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def launched_studio(home: Path, log: Path, host: str = "127.0.0.1", env: dict[str, str] | None = None,
                    args: tuple[str, ...] = ("app.py",)) -> Iterator[tuple[str, int]]:
    """Run the studio as a user starts it (``python app.py``) on a free port, with studio home ``home``.

    Args:
        home: ``STUDIO_HOME``.
        log: Where the server's output goes.
        host: The bind (``GRADIO_SERVER_NAME``); ``0.0.0.0`` makes a shared studio, still reached on loopback.
        env: Further environment variables for the server.
        args: Python's arguments, such as ``("-m", "studio", "serve", "--ray")`` (both read the bind from the
            environment).

    Yields:
        The studio's loopback URL and its server process id; the server is stopped on exit.
    """
    port = free_port()
    env = {**os.environ, **(env or {}), "STUDIO_HOME": str(home), "GRADIO_SERVER_NAME": host,
           "GRADIO_SERVER_PORT": str(port)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, proc, log)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise SystemExit(f"the studio did not start (see {log}): {tail[0]}") from None
            time.sleep(0.25)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads) so far, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3 of the full line, utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- what the clients must get back --------------------------------------------------------------------


def template_for(model: str, weights_sha256: str) -> Recipe:
    """The recipe every call sends (seed aside): the model's first class, if any, at truncation ``TRUNCATION``."""
    names = zoo.model_config(model).class_names
    return Recipe(model, weights_sha256, 0, {names[0]: 1.0} if names else {}, TRUNCATION)


def cli_images(template: Recipe, seeds: list[int]) -> np.ndarray:
    """The images ``python -m studio generate`` draws for ``template`` at ``seeds``, the way it draws them.

    Returns:
        ``[len(seeds), H, W, 3]`` uint8.
    """
    from studio.engine import Engine

    with Engine(timeout_s=3600) as engine:
        return engine.generate(replace(request_for(template), seeds=tuple(seeds)))


def pixel_digest(image: np.ndarray) -> str:
    """SHA-256 of an ``[H, W, 3]`` uint8 image's shape and pixels: equal digests, equal pixels."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    return hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()


def mismatched(drawn: list[tuple[int, str]], expected: dict[int, np.ndarray]) -> list[int]:
    """The seed of every drawn image whose pixels differ from ``expected[seed]``, once per image."""
    digests = {seed: pixel_digest(image) for seed, image in expected.items()}
    return [seed for seed, digest in drawn if digests[seed] != digest]


def verify(run: dict, tally: Tally, template: Recipe) -> None:
    """Check every image ``tally`` holds against the CLI's; record mismatches in ``run``."""
    seeds = sorted({seed for seed, _ in tally.drawn})
    expected = dict(zip(seeds, cli_images(template, seeds))) if seeds else {}
    wrong = mismatched(tally.drawn, expected) + tally.wrong_recipes
    run["checked"] = len(tally.drawn)
    run["mismatches"] = len(wrong)
    run["mismatched_seeds"] = sorted(set(wrong))


# -- the clients --------------------------------------------------------------------------------------


def _read(path: str) -> tuple[np.ndarray, str | None]:
    """The pixels ``[H, W, 3]`` and the recipe chunk of the PNG at ``path``."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")), img.text.get(PNG_KEY)  # type: ignore[attr-defined]


def _draw(client: object, plan: Plan, seed: int, tally: Tally, lock: threading.Lock, timed: bool = True) -> None:
    """One ``/draw`` call for ``seed``, recorded in ``tally``.

    An untimed call (a client's first, while Gradio sets up its session) is checked but adds no latency.
    """
    sent = plan.recipe_json(seed)
    t0 = time.monotonic()
    try:
        path, _ = client.predict(sent, api_name="/draw")  # type: ignore[attr-defined]
    except Exception as e:  # gradio_client raises several types; each is one failed call
        message = str(e)
        with lock:
            if any(mark in message.lower() for mark in BUSY_MARKS):
                tally.busy += 1
            else:
                tally.errors += 1
                tally.error_messages = (tally.error_messages + [message])[:5]
        return
    done = time.monotonic()
    pixels, embedded = _read(path)
    os.remove(path)  # the client's download folder would otherwise grow by one file per call
    with lock:
        if timed:
            tally.latencies.append(done - t0)
            tally.last_done = max(tally.last_done, done)
        tally.drawn.append((seed, pixel_digest(pixels)))
        if embedded is None or json.loads(embedded) != json.loads(sent):
            tally.wrong_recipes.append(seed)


def _client(plan: Plan, index: int, stride: int, downloads: str, ready: threading.Barrier, go: threading.Event,
            stop_at: list[float], tally: Tally, lock: threading.Lock) -> None:
    """Client ``index`` of ``stride``: connect, draw once untimed, then draw every ``stride``-th seed until the end."""
    from gradio_client import Client

    try:
        # A generous time limit: on a loaded machine a slow connection is a finding, not a crash.
        client = Client(plan.url, verbose=False, download_files=downloads, httpx_kwargs={"timeout": CALL_TIMEOUT_S})
        _draw(client, plan, plan.first_seed + index, tally, lock, timed=False)
    except Exception as e:
        tally.error_messages.append(f"a client could not connect and draw: {e!r}")
        ready.abort()  # this process stops waiting for its clients at once
        return
    try:
        ready.wait()
        go.wait()
        seed = plan.first_seed + index + stride
        while time.monotonic() < stop_at[0]:
            _draw(client, plan, seed, tally, lock)
            seed += stride
    finally:
        client.close()


def client_process(plan: Plan, first: int, threads: int, stride: int, start: mp.synchronize.Barrier,
                   results: mp.Queue) -> None:
    """One client process: ``threads`` clients (global indices ``first``...), each with its own ``Client``.

    Each client connects and makes one untimed call first: a new visitor's first call makes Gradio copy
    the app's state for its session, a once-per-visitor cost that would otherwise weigh on a short run's
    per-image figures.
    """
    tally, lock = Tally(), threading.Lock()
    ready, go, stop_at = threading.Barrier(threads + 1), threading.Event(), [0.0]
    with tempfile.TemporaryDirectory(prefix="studio-bench-client-") as downloads:
        workers = [threading.Thread(target=_client, args=(plan, first + i, stride, downloads, ready, go, stop_at,
                                                          tally, lock), daemon=True)
                   for i in range(threads)]
        for w in workers:
            w.start()
        try:
            ready.wait(timeout=START_TIMEOUT_S)  # every client has connected and drawn once
        except threading.BrokenBarrierError:
            start.abort()  # the other processes and the bench stop waiting at once
            raise SystemExit(tally.error_messages[0] if tally.error_messages else "a client did not start") from None
        start.wait()  # every process starts calling together
        stop_at[0] = time.monotonic() + plan.seconds
        cpu0 = _own_cpu_s()
        go.set()
        for w in workers:
            w.join()
        tally.cpu_s = _own_cpu_s() - cpu0
    results.put(tally)


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _split(clients: int, processes: int) -> list[int]:
    """Client threads per process, as even as possible, no process empty."""
    processes = min(processes, clients)
    return [clients // processes + (i < clients % processes) for i in range(processes)]


def drive(plan: Plan, clients: int, processes: int, server_pid: int) -> tuple[dict, Tally]:
    """Run ``clients`` clients in up to ``processes`` processes against the studio for ``plan.seconds``.

    Returns:
        The run's figures (see ``summarize``), images not yet verified, and the clients' merged tally.
    """
    from gradio_client import Client

    stats = Client(plan.url, verbose=False)
    stats.predict(api_name="/engine_stats")  # its session is set up now, outside the timed window
    ctx = mp.get_context("spawn")  # a fresh interpreter per process: no state copied from this one
    shares = _split(clients, processes)
    start, results = ctx.Barrier(len(shares) + 1), ctx.Queue()
    procs = [ctx.Process(target=client_process, args=(plan, sum(shares[:i]), n, clients, start, results), daemon=True)
             for i, n in enumerate(shares)]
    for p in procs:
        p.start()
    tally = Tally()
    try:
        start.wait(timeout=START_TIMEOUT_S)
        cpu0, t0 = cpu_seconds(server_pid), time.monotonic()  # the clients start calling now
        before = stats.predict(api_name="/engine_stats")[1]
        for _ in procs:
            tally.merge(results.get(timeout=plan.seconds + CALL_TIMEOUT_S))
    except (threading.BrokenBarrierError, queue.Empty):
        for p in procs:
            p.kill()
        raise SystemExit("a client process failed: its message is above") from None
    finally:
        for p in procs:
            p.join()
    server_cpu = cpu_seconds(server_pid) - cpu0
    after = stats.predict(api_name="/engine_stats")[1]
    stats.close()
    return summarize(tally, max(tally.last_done, t0) - t0, server_cpu, before, after, clients, len(shares)), tally


def summarize(tally: Tally, seconds: float, server_cpu_s: float, before: dict, after: dict, clients: int,
              processes: int) -> dict:
    """The figures of one run from the clients' tally, the server's CPU time and the engine's counters."""
    images = len(tally.latencies)
    lat_ms = np.array(tally.latencies or [0.0]) * 1000
    engine_images = after["images"] - before["images"]
    engine_batches = after["batches"] - before["batches"]
    return {
        "clients": clients,
        "processes": processes,
        "seconds": seconds,
        "images": images,
        "img_s": images / seconds if seconds else 0.0,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p95_ms": float(np.percentile(lat_ms, 95)),
        "errors": tally.errors,
        "busy": tally.busy,
        "error_messages": tally.error_messages,
        "server_cpu_ms_per_img": server_cpu_s * 1000 / images if images else 0.0,
        "server_cpu_cores": server_cpu_s / seconds if seconds else 0.0,  # how many cores the server kept busy
        "client_cpu_ms_per_img": tally.cpu_s * 1000 / images if images else 0.0,
        "load_avg_1min": os.getloadavg()[0],  # other work on the machine weighs on every figure
        "engine": {
            "requests": after["requests"] - before["requests"],
            "images": engine_images,
            "batches": engine_batches,
            "img_s": engine_images / seconds if seconds else 0.0,
            "mean_batch": engine_images / engine_batches if engine_batches else 0.0,
            "p50_ms": after["p50_ms"],
            "p95_ms": after["p95_ms"],
        },
    }


# -- the benchmark ---------------------------------------------------------------------------------


def bench_api(model: str, clients: list[int], seconds: float, processes: int, home: Path | None) -> dict:
    """Launch a studio (in ``home``, or a temporary one) and measure each client count; the JSON's shape."""
    from studio.engine import Engine

    with tempfile.TemporaryDirectory(prefix="studio-bench-api-") as tmp:
        home = home or Path(tmp) / "home"
        with temporary_home(home):  # the CLI images come from the same model folder
            with Engine() as engine:  # loads (and converts, in a new home) the model before the server starts
                template = template_for(model, engine.model(model).weights_sha256)
            result: dict = {"model": model, "home": "temporary" if home.is_relative_to(tmp) else str(home),
                            "runs": []}
            with launched_studio(home, Path(tmp) / "studio.log") as (url, pid):
                drive(Plan(url, template, 0, 1.0), 1, 1, pid)  # loads the model into the server's engine
                for i, n in enumerate(clients):
                    run, tally = drive(Plan(url, template, (i + 1) * RUN_SEEDS, seconds), n, processes, pid)
                    verify(run, tally, template)
                    result["runs"].append(run)
                    print(format_table([run], header=i == 0), flush=True)
    return result


COLUMNS = ("clients", "img/s", "p50 ms", "p95 ms", "errors", "busy", "mismatch", "server CPU ms/img",
           "client CPU ms/img", "engine img/s", "engine req", "mean batch", "load")


def format_table(runs: list[dict], header: bool = True) -> str:
    """One row per run (and the header row unless ``header`` is False), columns aligned."""
    rows = [COLUMNS] if header else []
    for r in runs:
        rows.append((f"{r['clients']} ({r['processes']} proc)", f"{r['img_s']:.1f}", f"{r['p50_ms']:.0f}",
                     f"{r['p95_ms']:.0f}", str(r["errors"]), str(r["busy"]), f"{r['mismatches']}/{r['checked']}",
                     f"{r['server_cpu_ms_per_img']:.1f}", f"{r['client_cpu_ms_per_img']:.1f}",
                     f"{r['engine']['img_s']:.1f}", str(r["engine"]["requests"]), f"{r['engine']['mean_batch']:.1f}",
                     f"{r['load_avg_1min']:.1f}"))
    widths = [max(len(COLUMNS[i]), 14 if i == 0 else 0) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)


def cmd_bench_api(args: argparse.Namespace) -> None:
    """Run the API benchmark, print its table and optionally write JSON."""
    if args.model not in zoo.model_names():
        raise ValueError(f"unknown model {args.model!r}; available: {', '.join(zoo.model_names())}")
    home = studio_home() if args.current_home else None
    result = bench_api(args.model, args.clients, args.seconds, args.processes, home)
    for run in result["runs"]:
        for message in run["error_messages"]:
            print(f"  {run['clients']} clients, error: {message}")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
