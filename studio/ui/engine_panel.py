"""A small panel with the shared engine's live statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from studio.engine import Engine

REFRESH_S = 2.0


def stats_markdown(stats: dict) -> str:
    """The engine's statistics as a one-row Markdown table, then the precision chosen for each model and why."""
    return (
        "| device | batches | images | mean batch | queue | p50 | p95 |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {stats['device']} | {stats['batches']} | {stats['images']} | {stats['mean_batch']:.1f} "
        f"| {stats['queue_depth']} | {stats['p50_ms']:.0f} ms | {stats['p95_ms']:.0f} ms |\n\n"
        f"Precision of the interactive views: {stats['precision']} (exports, replays and the "
        "command line draw in exact fp32)"
    )


def build_engine_panel(engine: Engine) -> None:
    """An accordion whose table refreshes every ``REFRESH_S`` seconds while the page is open."""
    with gr.Accordion("Engine: every image on this server goes through one batched engine", open=False,
                      elem_id="engine-panel"):
        table = gr.Markdown(stats_markdown(engine.stats()))
        raw = gr.JSON(visible=False)
    timer = gr.Timer(REFRESH_S)

    def refresh() -> tuple[str, dict]:
        stats = engine.stats()
        return stats_markdown(stats), stats

    # Reading counters is instant, so these ticks need no queue slot of their own.
    timer.tick(refresh, None, [table, raw], api_name="engine_stats", show_progress="hidden",
               concurrency_limit=None, queue=False)
