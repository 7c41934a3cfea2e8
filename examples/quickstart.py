"""Write, read, expire and clean up sessions on the embedded SQLite default.

Run ``sqlsession migrate`` first (it creates ``sqlsession.db`` in the working
directory), then ``python examples/quickstart.py``. Set ``SQLSESSION_URL`` to run the
same against PostgreSQL.
"""

from __future__ import annotations

import asyncio

from sqlsession import SchemaError
from sqlsession.drivers.sql import SQLDriver


async def main() -> None:
    # The same object as load_driver(session_drivers.sql(ttl=3600)), typed with its extras.
    async with SQLDriver(ttl=3600) as driver:  # $SQLSESSION_URL, else sqlite:///sqlsession.db
        await driver.set_item("sess-1", {"user": 42, "cart": ["apple"]})
        print("stored sess-1      ->", await driver.get_item("sess-1"))

        await driver.merge_item("sess-1", set={"cart": ["apple", "pear"]})
        print("merged the cart    ->", await driver.get_item("sess-1"))

        await driver.set_item("sess-2", {"user": 7}, ttl=0.5)
        print("sess-2, ttl 0.5 s  ->", await driver.get_item("sess-2"))
        await asyncio.sleep(0.6)
        print("sess-2 after 0.6 s ->", await driver.get_item("sess-2"), "(expired)")
        print("rows before cleanup ->", await driver.stats())
        print("cleanup deleted    ->", await driver.cleanup(), "expired row(s)")

        await driver.remove_item("sess-1")
        print("removed sess-1     ->", await driver.get_item("sess-1"))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SchemaError as exc:
        raise SystemExit(f"error: {exc}") from None
