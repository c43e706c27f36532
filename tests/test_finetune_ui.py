"""The Fine-tune tab's progress line, without a browser."""

from studio import jobs
from studio.ui.finetune_logic import progress_html


def running(eta_s: float) -> dict:
    return {"status": jobs.RUNNING, "config": {"steps": 20000}, "error": None,
            "progress": {"step": 25, "total": 20000, "eta_s": eta_s, "s_per_step": 7.17}}


def test_the_eta_reads_as_a_clock_with_hours_when_there_are_any() -> None:
    assert "ETA 2:05<" in progress_html(running(125))
    long_run = progress_html(running(2387 * 60 + 24))
    assert "ETA 39:47:24<" in long_run and "step 25 / 20000" in long_run
