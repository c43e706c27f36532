"""What Explore's "Start from an image" does, without Gradio: a picture -> the recipe of the closest image.

The search runs in a thread of its own (it needs gradients, which the engine's worker never computes),
on the projection's private copy of the generator; the callback streams its progress as previews. Each
browser session has its own stop flag, so Stop ends that session's search and keeps its best so far.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from studio import projection
from studio.latent import check_seed
from studio.recipe import Recipe

if TYPE_CHECKING:
    from studio.engine import Engine

_stops: dict[str, threading.Event] = {}  # a running search's stop flag, by browser session
_stops_lock = threading.Lock()


def stop(session: str) -> None:
    """Ask ``session``'s running search (if any) to stop and keep its best so far."""
    with _stops_lock:
        flag = _stops.get(session)
    if flag is not None:
        flag.set()


def projected(engine: Engine, path: str | None, model_name: str, seed: float | None, steps: float,
              class_name: str | None, session: str) -> Iterator[tuple[np.ndarray, str, Recipe | None]]:
    """Search ``model_name`` for the picture at ``path``; yield (best image so far, status, None) as it goes,
    then (best image, status, the found recipe).

    ``class_name`` holds a conditional model to that class (None searches the class blend); ``seed`` names
    the recipe and seeds the random starts.

    Raises:
        ValueError: No picture, a file that is not one, a bad seed or step count, or a search already running
            in this session.
    """
    if not path:
        raise ValueError("Drop a picture first, then press Project.")
    seed = check_seed(0 if seed is None else seed)
    model = engine.model(model_name)
    target = projection.load_target(Path(path), model.config.resolution)
    classes = model.config.class_names
    held = class_name if classes and class_name in classes else None
    flag = threading.Event()
    with _stops_lock:
        if session in _stops:
            raise ValueError("A projection is already running here: stop it or wait for it to finish.")
        _stops[session] = flag
    updates: queue.Queue = queue.Queue()
    done: dict = {}

    def search() -> None:
        try:
            done["found"] = projection.project(model, target, steps=int(steps), class_name=held, seed=seed,
                                               progress=lambda *report: updates.put(report), should_stop=flag.is_set)
        except Exception as e:  # handed to the callback, which raises it in the browser session's thread
            done["error"] = e
        finally:
            updates.put(None)

    threading.Thread(target=search, name="projection", daemon=True).start()
    try:
        while (report := updates.get()) is not None:
            step, total, image, loss = report
            last = image
            yield image, f"step {step} of {total} · loss {loss:.4f}", None
        if "error" in done:
            raise done["error"]
        found = done["found"]
        verb = "Stopped" if found.stopped else "Done"
        yield last, f"{verb}: the closest image found is now the current image (loss {found.loss:.4f}).", \
            found.recipe(model, seed)
    finally:
        flag.set()  # a closed page or a cancelled event ends the search too
        with _stops_lock:
            _stops.pop(session, None)
