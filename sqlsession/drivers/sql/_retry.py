"""How often work that a conflict rolled back is run again, and the pause before each try.

A conflict is a deadlock on one server, or on MariaDB Galera a certification failure:
another node committed a change to the same row first, and this transaction was rolled
back, at any statement or at COMMIT. Nothing of it was written, so every operation may
run again from the start, merges included. Under write load spread over nodes a few
percent of read-modify-write transactions meet one; a run of retries stops at a bound.
"""

from __future__ import annotations

import asyncio
import logging
import random

__all__ = ["CONFLICT_RETRIES", "pause_after_conflict"]

logger = logging.getLogger("sqlsession")

CONFLICT_RETRIES = 8
"""Tries after the first before `ConflictError`.

Across Galera nodes neither of two overlapping transactions on one row waits for the
other: the one certified first wins, about half the time each, so a run of losses
shortens by half with each try (eight in a row: 1 in 256 under the worst contention).
"""


async def pause_after_conflict(retry: int) -> None:
    """Wait before try `retry` (1, 2, ...) after a conflict.

    A random pause up to 10, 20, 40, then 80 ms: two nodes retrying the same row at once
    would otherwise meet again. Eight retries wait about 0.25 s in all on average.
    """
    logger.debug(
        "sqlsession: a conflicting write on another connection or node rolled an "
        "operation back; running it again (retry %d of %d)",
        retry,
        CONFLICT_RETRIES,
    )
    await asyncio.sleep(random.uniform(0, 0.005 * 2 ** min(retry, 4)))
