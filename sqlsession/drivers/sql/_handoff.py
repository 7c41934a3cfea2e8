"""Hand the fast path's last connection straight to its next operation.

A checkout from SQLAlchemy's pool and the checkin after it (each on a greenlet, with the
pool's bookkeeping, the reset on return and the asyncio queue) cost about as much
Python time as the primary-key read they wrap. A task running operations back to back
returns a connection and takes it again at once; between the two nothing else could
have used it unless someone waited for it.

So after an operation the connection stays checked out, as the spare of the event loop
it ran on: an operation that starts before the loop next runs its callbacks (the same
task's next one, typically) takes it without a checkout. A timer returns a spare nobody
took to the pool within `IDLE_RETURN` seconds. A timer rather than a callback on the
loop's next turn: that callback would cost an extra pass of the loop per operation,
while the timer is armed once per `IDLE_RETURN` and lets the loop sleep until the
database answers. Nothing waits for a spare longer than that, and it is never kept
when the pool is at its limit (others may be waiting; they go first, see `give_way`),
nor when the pool would replace it on its next checkout (invalidated, or older than
the pool's recycle time), nor for another event loop than the one it was made on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy.pool import Pool, PoolProxiedConnection

from ._greenlet import GreenletRunner

__all__ = ["IDLE_RETURN", "Handoff", "pool_drained"]

IDLE_RETURN = 0.001
"""Seconds after which a spare connection nobody took is back in the pool, at most."""


def pool_drained(pool: Any) -> bool:
    """Whether `pool` is at its limit with none idle, so other tasks may be waiting.

    Only a `QueuePool` makes a checkout wait, and only when every connection it may open
    is checked out; below its limit a checkout opens another instead of waiting.
    """
    checkedin = getattr(pool, "checkedin", None)  # QueuePool's; other pools never wait
    if checkedin is None or checkedin() != 0:
        return False
    limit = getattr(pool, "_max_overflow", -1)  # -1: no limit (QueuePool's own marker)
    return bool(limit > -1 and pool.overflow() >= limit)


def _fresh(fairy: PoolProxiedConnection, pool: Pool) -> bool:
    """Whether the pool would hand `fairy`'s connection out again as it is."""
    record: Any = getattr(fairy, "_connection_record", None)
    if record is None or record._is_hard_or_soft_invalidated():
        return False
    recycle: float = getattr(pool, "_recycle", -1)
    return recycle < 0 or time.time() - record.starttime <= recycle


def _close(fairy: PoolProxiedConnection) -> None:
    """Close a spare that must not go back to its pool, without awaiting.

    Its pool was disposed (the engine made a new one, and the old one would only keep
    it open), or it belongs to another event loop than the running one.
    """
    fairy.invalidate()
    fairy.close()


class Handoff:
    """The spare connection of each event loop the fast path runs on.

    Args:
        greenlets: runs the pool's checkin, which may await the database driver.
    """

    def __init__(self, greenlets: GreenletRunner) -> None:
        self._greenlets = greenlets
        # One spare per loop: a connection belongs to the loop it was opened on, and a
        # driver may serve more than one (a test client runs the app on a loop of its
        # own, in another thread). dict.pop is atomic, so two threads never share one.
        self._spares: dict[asyncio.AbstractEventLoop, tuple[PoolProxiedConnection, Pool]] = {}
        self._armed: set[asyncio.AbstractEventLoop] = set()  # loops with a timer due
        self._returning: set[asyncio.Task[None]] = set()

    def take(self, pool: Pool) -> PoolProxiedConnection | None:
        """This loop's spare connection from `pool`, or None (then check one out)."""
        if not self._spares:
            return None
        spare = self._spares.pop(asyncio.get_running_loop(), None)
        if spare is None:
            return None
        fairy, owner = spare
        if owner is not pool:
            _close(fairy)
            return None
        return fairy

    async def give_back(self, pool: Pool) -> None:
        """Return this loop's spare to the pool now, before a checkout of another kind.

        Work that checks out through SQLAlchemy (a merge, a listing) then gets the same
        connection back instead of opening another one next to the idle spare.
        """
        if self._spares:
            spare = self._spares.pop(asyncio.get_running_loop(), None)
            if spare is not None and spare[1] is not pool:
                _close(spare[0])
            elif spare is not None:
                await self._checkin(spare[0])

    def keep(self, fairy: PoolProxiedConnection, pool: Pool) -> bool:
        """Keep `fairy` as this loop's spare until the loop turns.

        Returns:
            False when it must go back to the pool now (the caller returns it).
        """
        if pool_drained(pool) or not _fresh(fairy, pool):
            return False
        loop = asyncio.get_running_loop()
        if self._spares:
            if loop in self._spares:
                return False  # one spare is enough: concurrent tasks go through the pool
            self._drop_stranded()
        self._spares[loop] = (fairy, pool)
        if loop not in self._armed:
            self._armed.add(loop)
            loop.call_later(IDLE_RETURN, self._release, loop)
        return True

    def _drop_stranded(self) -> None:
        """Close the spares of loops that closed before their timer ran (a test client's)."""
        for loop in [loop for loop in self._spares if loop.is_closed()]:
            spare = self._spares.pop(loop, None)
            if spare is not None:
                _close(spare[0])

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        """Return a spare nobody took to the pool.

        A callback runs between task steps, and an operation takes the spare in the
        step that kept it, if at all: a spare found here is idle.
        """
        self._armed.discard(loop)
        spare = self._spares.pop(loop, None)
        if spare is not None:
            task = loop.create_task(self._checkin(spare[0]))
            self._returning.add(task)
            task.add_done_callback(self._returning.discard)

    async def _checkin(self, fairy: PoolProxiedConnection) -> None:
        # On a greenlet: returning an overflow connection to a full pool closes it.
        await self._greenlets.run(fairy.close)

    async def release(self) -> None:
        """Return every spare to its pool now, and wait for returns under way (dispose)."""
        for loop in list(self._spares):
            spare = self._spares.pop(loop, None)
            if spare is None:
                continue
            if loop is asyncio.get_running_loop():
                await self._checkin(spare[0])
            else:
                _close(spare[0])  # made on another loop, which may be gone
        here = [t for t in self._returning if t.get_loop() is asyncio.get_running_loop()]
        if here:
            await asyncio.gather(*here, return_exceptions=True)
