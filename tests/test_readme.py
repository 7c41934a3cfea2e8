"""Every Python block of README.md runs as written, unless it is marked as a fragment.

A block is a fragment when the line before its opening fence starts with
``<!-- fragment``; fragments must still parse. Every other block is a complete program:
it runs in a subprocess (timeout 60 s) in an empty directory where ``sqlsession
migrate`` has created the default ``sqlsession.db``. A block that is a test module (it
defines ``test_`` functions or ``Test`` classes at the top level) runs there under
pytest, as ``test_example.py``: something must pass, and nothing fail. A block that
names the README's PostgreSQL URL, ``postgresql://app@db/app``, runs against the test
PostgreSQL database instead (the URL substituted), and skips without one. A block that
defines ``app`` (and is not a test module) is imported rather than run as ``__main__``
(which would start a server), and each of its own routes is requested twice through
Starlette's TestClient over https: both answers must be 200, and the second must differ
from the first (the session remembered the first request).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sqlsession import _migrate

README = Path(__file__).resolve().parent.parent / "README.md"
PLACEHOLDER_POSTGRES = "postgresql://app@db/app"
FRAGMENT = "<!-- fragment"

APP_CHECK = """
import re
import runpy
import sys

from starlette.testclient import TestClient

namespace = runpy.run_path(sys.argv[1], run_name="readme_example")
app = namespace.get("app")
if app is not None:
    ours = [
        route
        for route in app.routes
        if getattr(getattr(route, "endpoint", None), "__module__", None) == "readme_example"
    ]
    assert ours, "the example app has no routes of its own"
    with TestClient(app, base_url="https://testserver") as client:
        for route in ours:
            path = re.sub(r"{[^}]+}", "x", route.path)
            method = sorted(route.methods - {"HEAD"})[0]
            first = client.request(method, path)
            second = client.request(method, path)
            assert first.status_code == second.status_code == 200, (path, first, second)
            assert first.text != second.text, (path, first.text)
            print(path, first.text, second.text)
"""


@dataclass(frozen=True)
class Block:
    line: int
    source: str
    fragment: bool

    @property
    def needs_postgres(self) -> bool:
        return PLACEHOLDER_POSTGRES in self.source

    @property
    def is_test_module(self) -> bool:
        return re.search(r"^(async def test_|def test_|class Test)", self.source, re.M) is not None

    @property
    def is_app(self) -> bool:
        return re.search(r"^app = ", self.source, re.MULTILINE) is not None


def python_blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index
            end = lines.index("```", start + 1)
            before = next((line for line in reversed(lines[:start]) if line.strip()), "")
            source = "\n".join(lines[start + 1 : end]) + "\n"
            blocks.append(Block(start + 1, source, before.strip().startswith(FRAGMENT)))
            index = end
        index += 1
    return blocks


BLOCKS = python_blocks()
COMPLETE = [pytest.param(b, id=f"README.md:{b.line}") for b in BLOCKS if not b.fragment]
FRAGMENTS = [pytest.param(b, id=f"README.md:{b.line}") for b in BLOCKS if b.fragment]


def test_the_readme_has_complete_programs_first() -> None:
    assert len(COMPLETE) >= 3
    assert not BLOCKS[0].fragment  # the first example runs as written


@pytest.mark.slow
@pytest.mark.parametrize("block", COMPLETE)
def test_a_complete_block_runs(
    block: Block, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = block.source
    env = {k: v for k, v in os.environ.items() if k != "SQLSESSION_URL"}
    if block.needs_postgres:
        # The test session's own database, migrated and dropped at the end.
        url = str(request.getfixturevalue("postgres_database"))
        source = source.replace(PLACEHOLDER_POSTGRES, url)
    else:
        _migrate.upgrade(f"sqlite:///{tmp_path / 'sqlsession.db'}")
    program = tmp_path / ("test_example.py" if block.is_test_module else "example.py")
    program.write_text(source, encoding="utf-8")
    if block.is_test_module:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", program.name]
    elif block.is_app:
        (tmp_path / "check_app.py").write_text(APP_CHECK, encoding="utf-8")
        command = [sys.executable, str(tmp_path / "check_app.py"), str(program)]
    else:
        command = [sys.executable, str(program)]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"README.md:{block.line}\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr
    if block.is_test_module:
        assert re.search(r"^\d+ passed", result.stdout.splitlines()[-1]), result.stdout


@pytest.mark.parametrize("block", FRAGMENTS)
def test_a_fragment_parses(block: Block) -> None:
    ast.parse(block.source, filename=f"README.md:{block.line}")
