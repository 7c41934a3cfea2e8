"""`merge_existing` (`SupportsMergeExisting`) on the built-in drivers, on every backend.

Its contract (a live item is merged; an absent, expired or removed one is neither
created nor changed, and None is returned; bad input is refused) is part of the shipped
`sqlsession.testing.DriverContract` and `InputValidationContract`, which
`tests/test_contract.py` runs on every built-in driver and `tests/test_example_driver.py`
on a third party's. What is left here is about our drivers only.
"""

from __future__ import annotations

from typing import Any

from sqlsession import SupportsMergeExisting


async def test_the_built_in_drivers_have_it(driver: Any) -> None:
    assert isinstance(driver, SupportsMergeExisting)
