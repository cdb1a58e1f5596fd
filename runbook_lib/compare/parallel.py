"""Run the same kind of work on both sides at the same time (one thread per side)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any


class BothSides:
    """A two-thread pool kept for a whole comparison (starting threads per call costs ~1 ms)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="compare")

    def __call__(self, fa: Callable[[], Any], fb: Callable[[], Any]) -> tuple[Any, Any]:
        """fa() and fb() concurrently; both finish before any error is raised."""
        futures = (self.pool.submit(fa), self.pool.submit(fb))
        wait(futures)
        return futures[0].result(), futures[1].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> BothSides:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def on_both(fa: Callable[[], Any], fb: Callable[[], Any]) -> tuple[Any, Any]:
    """One-off fa() and fb() concurrently."""
    with BothSides() as both:
        return both(fa, fb)
