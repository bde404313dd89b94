"""One writer for the marker-delimited sections of ``benchmarks/RESULTS.md`` (each benchmark script owns one)."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n"


def replace_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Put ``text`` between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` (replaced in place, else appended)."""
    body = path.read_text() if path.exists() else HEADER
    block = f"<!-- BEGIN {name} -->\n{text.rstrip()}\n<!-- END {name} -->\n"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->\n?", re.S)
    body = pattern.sub(lambda _: block, body) if pattern.search(body) else body.rstrip() + "\n\n" + block
    path.write_text(body)
