"""Session-layer CPU per request kind on the memory driver, against a baseline commit.

    .venv/bin/python benchmarks/session_layer.py [--baseline bb32a89] [--rounds 3000]

The baseline's ``sqlsession`` package is extracted from git (``git archive``) into a
temporary directory; each version then runs in a subprocess of its own that imports one
of the two, the versions taking turns for ``--repeats`` rounds, and the table gives the
median time per request of each and their ratio (this tree / baseline, below 1 is
faster). Only ratios from one run mean anything on a shared machine.

A request here is ``SessionStore.load``, what the app does, ``SessionStore.commit``, on a
signed-in session of about 930 bytes of JSON (as in issue 13) held by the memory driver,
so no database time hides the session layer's own:

    untouched   the app never reads the session
    read        reads two scalar values
    read cart   reads the cart (a list) and changes nothing
    change      assigns a counter (one key merged)
    append      appends to the cart in place (one key merged), then takes it back
    new         a visitor without a cookie gets a session of three keys
    regenerate  a new id for the same data
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KINDS = ["untouched", "read", "read cart", "change", "append", "new", "regenerate"]


def session_data() -> dict[str, Any]:
    """A signed-in session of about 930 bytes: a user, preferences, a cart, a counter."""
    data: dict[str, Any] = {
        "user": {"id": 4711, "email": "ada@example.com", "name": "Ada Lovelace"},
        "prefs": {"theme": "dark", "lang": "en", "tz": "Europe/Paris", "currency": "EUR"},
        "csrf": "b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7",
        "visits": 12,
        "cart": [],
    }
    while len(json.dumps(data, separators=(",", ":"))) < 900:
        n = len(data["cart"])
        data["cart"].append({"sku": f"SKU-{n:06d}", "qty": n % 5 + 1, "price": 19.99})
    return data


async def measure(rounds: int) -> dict[str, float]:
    """Median microseconds per request of each kind, with the sqlsession importable now."""
    from sqlsession.drivers.memory import MemoryDriver
    from sqlsession.web import SessionStore

    store = SessionStore(MemoryDriver(max=100_000))
    session = await store.load([])
    session.update(session_data())
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    cookie = [change.session_id]

    undo: list[Any] = []  # sessions whose cart to take back, untimed

    async def untouched() -> None:
        await store.commit(await store.load(cookie))

    async def read() -> None:
        loaded = await store.load(cookie)
        _ = loaded["visits"], loaded["csrf"]
        await store.commit(loaded)

    async def read_cart() -> None:
        loaded = await store.load(cookie)
        _ = len(loaded["cart"])
        await store.commit(loaded)

    async def change_counter() -> None:
        loaded = await store.load(cookie)
        loaded["visits"] = loaded["visits"] + 1
        await store.commit(loaded)

    async def append() -> None:
        loaded = await store.load(cookie)
        loaded["cart"].append({"sku": "SKU-X", "qty": 1, "price": 1.0})
        await store.commit(loaded)
        undo.append(loaded)

    async def new() -> None:
        fresh = await store.load([])
        fresh.update({"visits": 1, "prefs": {"theme": "light"}, "cart": []})
        await store.commit(fresh)

    async def regenerate() -> None:
        nonlocal cookie
        loaded = await store.load(cookie)
        loaded.regenerate()
        done = await store.commit(loaded)
        assert done is not None
        assert done.session_id is not None
        cookie = [done.session_id]

    steps = {
        "untouched": untouched,
        "read": read,
        "read cart": read_cart,
        "change": change_counter,
        "append": append,
        "new": new,
        "regenerate": regenerate,
    }
    results: dict[str, float] = {}
    for kind in KINDS:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            await steps[kind]()
            times.append(time.perf_counter() - start)
            for loaded in undo:  # keep the size steady for the next round
                loaded["cart"].pop()
                await store.commit(loaded)
            undo.clear()
        results[kind] = statistics.median(times) * 1e6
    return results


def child(path: str, rounds: int) -> None:
    sys.path.insert(0, path)
    import sqlsession

    assert Path(sqlsession.__file__).resolve().is_relative_to(Path(path).resolve())
    print(json.dumps(asyncio.run(measure(rounds))))


def run_one(path: Path, rounds: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--rounds", str(rounds)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="bb32a89", help="git commit to compare with")
    parser.add_argument("--rounds", type=int, default=3000, help="requests per kind and run")
    parser.add_argument("--repeats", type=int, default=3, help="turns each version takes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rounds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "sqlsession"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "this tree": []}
        for _ in range(args.repeats):
            runs["baseline"].append(run_one(Path(tmp), args.rounds))
            runs["this tree"].append(run_one(ROOT, args.rounds))
    print(f"session layer, memory driver, us per request (median of {args.repeats} runs)")
    print(f"{'request':<12} {'baseline':>9} {'this tree':>10} {'ratio':>7}")
    for kind in KINDS:
        base = statistics.median(r[kind] for r in runs["baseline"])
        ours = statistics.median(r[kind] for r in runs["this tree"])
        print(f"{kind:<12} {base:>9.1f} {ours:>10.1f} {ours / base:>6.2f}x")


if __name__ == "__main__":
    main()
