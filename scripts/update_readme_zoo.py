"""Regenerate the model-zoo table in README.md and the rows `kinetoscope models` ships with.

Run `make zoo` after adding or changing a variant (or anything under models/ or layers/): it counts every
registered variant once, writes the Markdown table between the README's zoo markers, and writes
src/kinetoscope/_zoo_table.py, which `kinetoscope models` reads instead of counting while its fingerprint
matches the model sources. tests/test_readme.py fails while either is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kinetoscope._files import replace_between_markers
from kinetoscope.profiling import format_zoo_table, write_zoo_table, zoo_rows

BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def counted_rows() -> list[dict]:
    return zoo_rows(recount=True, progress=True)


def zoo_markdown(rows: list[dict] | None = None) -> str:
    return format_zoo_table(counted_rows() if rows is None else rows, markdown=True)


def render(readme: str, rows: list[dict] | None = None) -> str:
    return replace_between_markers(readme, zoo_markdown(rows), BEGIN, END)


if __name__ == "__main__":
    rows = counted_rows()
    text = README.read_text()
    new = render(text, rows)
    if "--check" in sys.argv:
        from kinetoscope.profiling import shipped_zoo

        sys.exit(0 if new == text and shipped_zoo() == rows else 1)
    README.write_text(new)
    print(f"updated {README} and {write_zoo_table(rows)}")
