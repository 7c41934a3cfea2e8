"""The shipped contract classes, run as a third party runs them: in a pytest of their own.

Each test writes a test module into an empty directory and runs pytest on it in a
subprocess (no configuration of ours, so pytest-asyncio is in its default strict mode),
then reads each test's outcome from the JUnit XML report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MINIMAL = '''
import json

import pytest

from sqlsession.testing import DriverContract


class Minimal:
    """Only the three required coroutines: no expiry, no keys, no merge."""

    def __init__(self):
        self.items = {}

    async def get_item(self, key):
        text = self.items.get(key)
        return None if text is None else json.loads(text)

    async def set_item(self, key, value):
        self.items[key] = json.dumps(value)

    async def remove_item(self, key):
        self.items.pop(key, None)


class TestMinimal(DriverContract):
    @pytest.fixture
    def driver_factory(self):
        return lambda clock, **options: Minimal()
'''

BROKEN = '''
import json
import time

import pytest

from sqlsession.drivers.memory import MemoryDriver
from sqlsession.testing import DriverContract


class NoCopy(MemoryDriver):
    """Hands out the stored object itself, so a caller's change reaches the store."""

    async def set_item(self, key, value, **options):
        await super().set_item(key, value, **options)
        self.kept = getattr(self, "kept", {})
        self.kept[key] = value

    async def get_item(self, key):
        if key in getattr(self, "kept", {}) and await super().get_item(key) is not None:
            return self.kept[key]
        return await super().get_item(key)


class TestNoCopy(DriverContract):
    drivers_share_storage = False

    @pytest.fixture
    def driver_factory(self):
        return lambda clock, **options: NoCopy(clock=clock, max=5000, **options)


class TestWallClock(DriverContract):
    """Ignores the injected clock: expiry cannot be moved by the tests."""

    drivers_share_storage = False

    @pytest.fixture
    def driver_factory(self):
        return lambda clock, **options: MemoryDriver(clock=time.time, max=5000, **options)


class TestForgotTheFixture(DriverContract):
    pass
'''


def run_contract(tmp_path: Path, source: str) -> dict[str, tuple[str, str]]:
    """Run pytest on `source`; return {test name: (outcome, message)}."""
    (tmp_path / "test_driver.py").write_text(source)
    report = tmp_path / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SQLSESSION_"))}
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={report}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rpartition('.')[2]}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, child.get("message", "")
        outcomes[name] = outcome, message
    return outcomes


@pytest.mark.slow
def test_a_minimal_driver_runs_the_core_and_skips_what_it_lacks(tmp_path: Path) -> None:
    outcomes = run_contract(tmp_path, MINIMAL)
    by_outcome: dict[str, set[str]] = {}
    for name, (outcome, _) in outcomes.items():
        by_outcome.setdefault(outcome, set()).add(name.partition("::")[2].partition("[")[0])
    assert set(by_outcome) == {"passed", "skipped"}, outcomes
    assert {
        "test_satisfies_protocol",
        "test_round_trip_keeps_value_and_types",
        "test_get_returns_a_copy",
        "test_absent_key",
        "test_set_replaces_and_remove_deletes",
        "test_fifty_concurrent_writers_on_one_key",
        "test_concurrent_mixed_operations",
        "test_generated_values_round_trip_exactly",
    } <= by_outcome["passed"]
    assert {
        "test_none_is_stored_and_exists",
        "test_get_keys_and_clear_by_prefix",
        "test_touch",
        "test_expired_rows_are_kept_until_cleanup",
        "test_merge_item",
        "test_merge_existing_merges_a_live_item",
    } <= by_outcome["skipped"]
    assert not by_outcome["passed"] & by_outcome["skipped"]
    # The reason names what is missing, from sqlsession.driver.
    assert outcomes["TestMinimal::test_expired_rows_are_kept_until_cleanup"][1] == (
        "Minimal does not implement SupportsExpiry, SupportsCleanup (sqlsession.driver): "
        "this part of the contract does not apply."
    )


@pytest.mark.slow
def test_the_contract_catches_broken_drivers(tmp_path: Path) -> None:
    outcomes = run_contract(tmp_path, BROKEN)

    def failed(cls: str) -> set[str]:
        return {
            name.partition("::")[2]
            for name, (outcome, _) in outcomes.items()
            if name.startswith(cls + "::") and outcome != "passed"
        }

    # Handing out the stored object: callers change it, a tuple stays a tuple, and what
    # add_item or merge_existing wrote later is hidden behind the object kept from set_item.
    assert failed("TestNoCopy") == {
        "test_get_returns_a_copy",
        "test_tuples_are_stored_as_lists",
        "test_exactly_one_of_concurrent_adds_writes",
        "test_merge_existing_merges_a_live_item",
        "test_merge_existing_applies_its_ttl_to_the_item",
        "test_concurrent_merge_existing_of_different_fields_all_win",
        "test_merge_existing_text_merges_a_live_item_only",
    }
    # Every test that waits for something to expire or compares an expiry instant with
    # the clock (the others pass on a wall clock too).
    assert failed("TestWallClock") == {
        "test_default_ttl_expires_items",
        "test_ttl_none_stores_forever",
        "test_millisecond_precision",
        "test_touch_does_not_revive_an_expired_item",
        "test_expired_rows_are_kept_until_cleanup",
        "test_merge_item",
        "test_get_entry_returns_the_value_and_its_expiry",
        "test_get_entry_uses_the_default_ttl",
        "test_get_entry_of_an_expired_item_is_none",
        "test_get_entry_is_exact_after_touch_and_merge",
        "test_renew_extends_an_item_that_has_an_expiry",
        "test_renew_does_not_revive_an_expired_item",
        "test_delete_item_reports_whether_it_deleted",
        "test_get_many_returns_only_live_items",
        "test_set_many_writes_every_item_with_one_ttl",
        "test_remove_many_counts_the_live_items_it_deleted",
        "test_add_item_writes_only_when_absent",
        "test_add_item_replaces_an_expired_item",
        "test_exactly_one_of_concurrent_adds_writes",
        "test_cleanup_with_a_prefix_deletes_only_its_expired_items",
        "test_cleanup_with_a_prefix_of_the_highest_code_point",
        "test_merge_existing_neither_revives_nor_changes_an_expired_item",
        "test_merge_existing_applies_its_ttl_to_the_item",
        "test_json_text_honours_ttl",
    }
    forgot = {name: o for name, o in outcomes.items() if name.startswith("TestForgotTheFixture")}
    assert forgot
    assert {outcome for outcome, _ in forgot.values()} == {"error"}
    message = next(iter(forgot.values()))[1]
    assert "TestForgotTheFixture must provide a driver_factory fixture" in message
