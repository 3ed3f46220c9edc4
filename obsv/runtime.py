"""Process settings for ``obsv serve``: the cyclic garbage collector.

The collector's defaults suit short scripts, not a service holding a large fold:
1. A collection of the youngest generation runs every 700 net allocations of
   container objects. Parsing one 4 KB Sentry payload allocates a few hundred, so
   under load one ran every few requests, and every tenth of those went on to the
   next generation: about a tenth of the loop's time per delivery went to scanning
   objects that reference counting frees anyway. The first threshold is raised to
   ``YOUNG`` so that a collection covers a few hundred deliveries instead.
2. A full collection traverses every container object. After a restart the fold
   holds several per Sentry issue (over a million at 100 000 issues), so each full
   collection stalled the event loop for tens of milliseconds, which is what the
   99th percentile of the webhook's latency showed. Once the service is ready,
   ``freeze`` moves everything that exists then (modules, the app, the restored
   fold) out of the collector's sight; objects made later are collected as usual,
   and frozen ones are still freed by reference counting when they are dropped
   (the fold's links and records hold no cycles). Nothing is collected first: that
   took 30 ms at 100 000 issues, on the loop, just as the service became ready; what
   the young generations held in cycles at that instant stays, once.
3. At that same moment the start-up's garbage (the snapshot's parsed rows, the
   records folded) is free but still held by the C allocator, which gives memory
   back to the system only from the top of its heap: ``malloc_trim`` returns the free
   pages inside it too (13 MB of resident memory at 100 000 issues). glibc only; on
   another C library there is nothing to call and nothing is done.
4. Loading a snapshot does the same after each column block (obsv/snapshots.py): each
   block's parsed row is garbage once loaded, and without a trim the next blocks'
   objects and the growing tables land beside that garbage rather than in it, so the
   peak (``VmHWM``) stood 11 MB above the resident memory once ready at 100 000
   issues; trimmed per block, 4 MB, in the same time.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc

YOUNG = 10_000  # rule 1; each young collection then scans at most this many objects


def tune_collector() -> None:
    """Rule 1, for the whole process (called once by ``obsv serve``)."""
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)


def freeze_startup_heap() -> None:
    """Rules 2 and 3: every object that exists now leaves the collector's sight, and the
    start-up's free memory goes back to the system."""
    gc.freeze()
    return_free_memory()


def return_free_memory() -> None:
    """Rules 3 and 4: the C allocator's free pages go back to the system (glibc only)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: libc's
    except (OSError, AttributeError):
        return
    trim(0)


def freeze_once_ready(startup: asyncio.Task[None]) -> None:
    """Done-callback of the consumer's start: rule 2 once it succeeded."""
    if not startup.cancelled() and startup.exception() is None:
        freeze_startup_heap()
