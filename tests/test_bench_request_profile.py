"""benchmarks/request_profile.py runs, checks its writes and prints its table and profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "request_profile.py"


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_table_has_a_row_per_contender_and_a_cell_per_route() -> None:
    out = run("--requests", "5", "--rounds", "1", "--only", "none,cookie,sqlsession-sqlite")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert set(rows) == {"none", "cookie", "sqlsession-sqlite"}
    for cells in rows.values():
        assert len(cells) == 9  # µs, x none, x starsessions-redis (not run: "-") per route
        assert float(cells[0]) > 0
    assert rows["none"][1] == "1.00x"


def test_profile_names_the_session_layer() -> None:
    out = run("--requests", "20", "--profile", "sqlsession-memory:write", "--top", "200")
    assert "sqlsession/web/store.py" in out
    assert "(commit)" in out
