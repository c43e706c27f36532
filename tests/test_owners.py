"""A shared studio (public bind) as strangers meet it: own jobs and data sets, no borrowed token.

The studio runs as ``python app.py`` on 0.0.0.0 (reached through 127.0.0.1) with its home outside /tmp and
outside the working directory, like the default ``~/.cache/gan-studio``: Gradio must still show the
pictures the studio keeps there.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client
from playwright.sync_api import Browser, Page, sync_playwright

from studio import data
from studio.ui.finetune_logic import NO_JOB
from studio.ui.owners import NO_OWNER, dataset_name, new_owner
from studio.loadtest import launched_studio
from tests.conftest import job_workers_stopped, launch_chromium, noise_artworks, start_long_fine_tune

pytestmark = [pytest.mark.slow]

@pytest.fixture(scope="module")
def shared(converted_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A studio on a public bind, with a server-side HF_TOKEN; yields its loopback URL and its home."""
    home = Path.home() / ".cache" / f"gan-studio-test-{secrets.token_hex(4)}"
    shutil.copytree(converted_home, home)
    log = tmp_path_factory.mktemp("shared") / "app.log"
    try:
        with job_workers_stopped(home), launched_studio(home, log, host="0.0.0.0",
                                                        env={"HF_TOKEN": "hf_servers_own_secret_token"}) as (url, _):
            yield url, home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def event(url: str, elem_id: str, trigger: str) -> tuple[int, int]:
    """The (fn_index, trigger id) of the event that ``trigger`` on component ``elem_id`` fires, from /config."""
    config = httpx.get(url + "config").json()
    component = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
    for index, dep in enumerate(config["dependencies"]):
        if [component, trigger] in dep["targets"]:
            return dep.get("id", index), component
    raise AssertionError(f"no {trigger} event on #{elem_id}")


def queue_call(url: str, elem_id: str, trigger: str, data: list[Any]) -> dict[str, Any]:
    """Call an event through the raw queue API from a fresh session, as any script can: its outcome message."""
    fn_index, trigger_id = event(url, elem_id, trigger)
    session = secrets.token_hex(8)
    joined = httpx.post(url + "gradio_api/queue/join", json={
        "data": data, "fn_index": fn_index, "trigger_id": trigger_id, "session_hash": session, "event_data": None})
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the queue closed without an outcome")


def open_finetune(browser: Browser, url: str) -> Page:
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.wait_for_selector("#main-image img", timeout=90_000)
    page.get_by_role("tab", name="Fine-tune").click()
    return page


def job_ids(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "jobs").iterdir()) if (home / "jobs").is_dir() else []


@pytest.mark.browser
def test_two_visitors_each_see_their_own_work_and_the_home_outside_tmp_serves_pictures(
        shared: tuple[str, Path], tmp_path: Path) -> None:
    url, home = shared
    assert not str(home).startswith(("/tmp", os.getcwd()))
    with sync_playwright() as p:
        browser = launch_chromium(p)
        alice, bob = open_finetune(browser, url), open_finetune(browser, url)
        earlier = set(job_ids(home))  # the copied home may hold other tests' jobs
        start_long_fine_tune(alice, noise_artworks(tmp_path / "alice"), "prints", "alices-eyes")
        # The contact sheet and the live previews, kept under a home Gradio does not serve, are shown all the same.
        alice.wait_for_function("() => document.querySelector('#ft-contact img')?.naturalWidth > 0", timeout=30_000)
        alice.wait_for_function("() => document.querySelector('#ft-now img')?.naturalWidth > 0", timeout=60_000)
        (job,) = set(job_ids(home)) - earlier

        # Bob, at the same time, in another browser profile: none of Alice's work, and his own data set name
        # "prints" does not find hers.
        bob.reload()
        bob.wait_for_selector("#main-image img", timeout=90_000)
        bob.get_by_role("tab", name="Fine-tune").click()
        bob.wait_for_timeout(3000)  # several refreshes of the job view
        assert "No fine-tune yet" in bob.inner_text("#ft-progress")
        assert job not in bob.inner_text("#ft-jobs")
        bob.locator("#ft-data-name textarea, #ft-data-name input").first.fill("prints")
        bob.locator("#ft-out textarea, #ft-out input").first.fill("bobs-eyes")
        bob.click("#ft-start")
        bob.wait_for_function("() => document.body.innerText.includes('Prepare a data set first')", timeout=30_000)

        # Alice reloads: her browser keeps its identity, and her job comes back.
        alice.reload()
        alice.wait_for_selector("#main-image img", timeout=90_000)
        alice.get_by_role("tab", name="Fine-tune").click()
        alice.wait_for_function("() => document.querySelector('#ft-progress').innerText.includes('running')",
                                timeout=30_000)
        alice.click("#ft-cancel")
        alice.wait_for_function("() => document.querySelector('#ft-progress').innerText.includes('cancelled')",
                                timeout=30_000)
        browser.close()


def test_raw_queue_calls_cannot_reach_another_owners_job(shared: tuple[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, home = shared
    monkeypatch.setenv("STUDIO_HOME", str(home))
    owner, stranger = new_owner(None), new_owner(None)
    data.ingest(noise_artworks(tmp_path / "theirs"), dataset_name(owner, "victim-set"), 32)
    target = "20260101-000000-abcdef12"
    doc = {"id": target, "owner": owner, "data": dataset_name(owner, "victim-set"), "status": "cancelled",
           "created": time.time(), "resume": False, "error": None, "pid": None, "model_dir": None,
           "config": {"data": dataset_name(owner, "victim-set"), "out": "theirs", "run": target, "base": "tiny"}}
    (home / "jobs" / target).mkdir(parents=True)
    (home / "jobs" / target / "job.json").write_text(json.dumps(doc))
    # The job's id, sent straight to the queue as any script can, with another identity or none.
    for forged in (stranger, None, "", "x"):
        outcome = queue_call(url, "ft-jobs", "input", [target, forged])
        assert outcome["success"] is False
        error = outcome["output"]["error"]  # the studio's own check, or Gradio's of the picker's choices first
        assert error in (NO_JOB, NO_OWNER) or error.endswith("is not in the list of choices: []"), error
    # Starting a job on another owner's data set is refused: names are looked up among the caller's own.
    outcome = queue_call(url, "ft-start", "click", ["victim-set", "tiny", "stolen", False, "Quick", 300, 16, 2e-4,
                                                    "logistic", "auto", 0, 0, stranger])
    assert outcome["success"] is False and "Prepare a data set first" in outcome["output"]["error"]
    assert all(json.loads((home / "jobs" / j / "job.json").read_text())["config"]["out"] != "stolen"
               for j in job_ids(home))
    assert json.loads((home / "jobs" / target / "job.json").read_text())["status"] == "cancelled"  # untouched


def test_a_visitor_cannot_push_with_the_servers_token(shared: tuple[str, Path]) -> None:
    url, _ = shared
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="a shared studio never pushes with its server's token"):
        client.predict("tiny", "alice/tiny-cats", False, "", api_name="/push_model")
