"""Run the same kind of work on both sides at the same time (one thread per side)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def on_both(fa: Callable[[], Any], fb: Callable[[], Any]) -> tuple[Any, Any]:
    """fa() and fb() concurrently; both finish before any error is raised."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="compare") as pool:
        futures = (pool.submit(fa), pool.submit(fb))
    return futures[0].result(), futures[1].result()
