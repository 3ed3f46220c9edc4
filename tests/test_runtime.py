"""obsv/runtime.py: the collector's settings for ``obsv serve``."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from obsv.runtime import YOUNG, freeze_once_ready, tune_collector


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_only_the_young_threshold_is_raised(collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector()
    assert gc.get_threshold() == (YOUNG, 10, 10)


async def test_the_heap_is_frozen_only_after_a_successful_start(collector: None) -> None:
    async def fail() -> None:
        raise RuntimeError("the fold failed")

    async def succeed() -> None:
        return None

    gc.unfreeze()
    failed = asyncio.create_task(fail())
    cancelled = asyncio.create_task(asyncio.sleep(10))
    await asyncio.wait([failed])
    cancelled.cancel()
    await asyncio.wait([cancelled])
    freeze_once_ready(failed)
    freeze_once_ready(cancelled)
    assert gc.get_freeze_count() == 0

    ready = asyncio.create_task(succeed())
    await ready
    freeze_once_ready(ready)
    assert gc.get_freeze_count() > 0
