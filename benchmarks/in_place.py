"""What finding in-place edits costs a commit, for a 1 KB and a 100 KB session.

    .venv/bin/python benchmarks/in_place.py [--rounds 2000]

The session layer hands out one object per key and request; at commit it re-encodes the
mutable values the app was handed and compares them with what was loaded, to save
``session["cart"].append(x)``. This measures that comparison alone, and whole
load-and-commit cycles on the memory driver (so that no database time hides it):

    json.dumps      the standard library encoding the session once, for scale
    compare only    the comparison the commit runs after every value was read
    untouched       load, commit: no value read, nothing compared
    read, unchanged load, read every key, commit: every value compared, nothing written
    append in place load, append to the cart, commit: one value compared and merged

Each figure is the median of `--rounds` runs, in microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlsession.drivers.memory import MemoryDriver
from sqlsession.web import SessionStore
from sqlsession.web.session import Session, state_of


def session_data(size: int) -> dict[str, Any]:
    """A signed-in session of about `size` bytes of JSON: a user, prefs and a cart."""
    data: dict[str, Any] = {
        "user": "ada@example.com",
        "prefs": {"theme": "dark", "lang": "en", "tz": "Europe/Paris"},
        "cart": [],
    }
    while len(json.dumps(data)) < size:
        n = len(data["cart"])
        data["cart"].append({"sku": f"SKU-{n:06d}", "qty": n % 5 + 1, "price": 19.99})
    return data


async def median_us(rounds: int, step: Callable[[], Awaitable[None]]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


async def measure(size: int, rounds: int) -> dict[str, float]:
    driver = MemoryDriver(max=10)
    store = SessionStore(driver, max_size=None)
    session = await store.load([])
    session.update(session_data(size))
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    cookie = [change.session_id]

    async def untouched() -> None:
        await store.commit(await store.load(cookie))

    async def read_unchanged() -> None:
        loaded = await store.load(cookie)
        dict(loaded)
        await store.commit(loaded)

    async def append() -> None:
        loaded = await store.load(cookie)
        loaded["cart"].append({"sku": "SKU-X", "qty": 1, "price": 1.0})
        await store.commit(loaded)
        loaded["cart"].pop()  # keep the size steady: the next round reads it again
        await store.commit(loaded)

    read = await store.load(cookie)
    dict(read)

    async def compare_only() -> None:
        state_of(read).take_in_place_edits()

    plain = dict(read)

    async def dumps() -> None:
        json.dumps(plain)

    loaded: Session = await store.load(cookie)
    encoded = len(json.dumps(dict(loaded)))
    return {
        "bytes": float(encoded),
        "json.dumps": await median_us(rounds, dumps),
        "compare only": await median_us(rounds, compare_only),
        "untouched": await median_us(rounds, untouched),
        "read, unchanged": await median_us(rounds, read_unchanged),
        # Two commits per round (append, then undo): halved.
        "append in place": await median_us(rounds, append) / 2,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    rows = {
        label: await measure(size, args.rounds)
        for label, size in (("1 KB", 1024), ("100 KB", 100 * 1024))
    }
    columns = ["json.dumps", "compare only", "untouched", "read, unchanged", "append in place"]
    print(f"| session | bytes | {' | '.join(columns)} |")
    print(f"|---|---:|{'---:|' * len(columns)}")
    for label, row in rows.items():
        cells = " | ".join(f"{row[c]:.1f} µs" for c in columns)
        print(f"| {label} | {row['bytes']:.0f} | {cells} |")


if __name__ == "__main__":
    asyncio.run(main())
