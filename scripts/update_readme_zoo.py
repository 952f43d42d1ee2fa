"""Regenerate the model-zoo table in README.md and the rows `kinetoscope models` ships with.

Run `make zoo` after adding or changing a variant (or anything under models/ or layers/): it counts every
registered variant once, writes the Markdown table between the README's zoo markers, and writes
src/kinetoscope/_zoo_table.py, which `kinetoscope models` reads instead of counting while its fingerprint
matches the model sources. tests/test_readme.py fails while either is stale.
"""

from __future__ import annotations

import json
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


def stale_parts(readme: str, rows: list[dict]) -> list[str]:
    """What `make zoo` would rewrite: the README's table, the rows `kinetoscope models` ships, both or none."""
    from kinetoscope.profiling import shipped_zoo

    stale = [] if render(readme, rows) == readme else ["README.md"]
    # the shipped rows went through JSON (tuples come back as lists), so compare them as JSON
    return stale + ([] if shipped_zoo() == json.loads(json.dumps(rows)) else ["src/kinetoscope/_zoo_table.py"])


if __name__ == "__main__":
    rows = counted_rows()
    text = README.read_text()
    if "--check" in sys.argv:
        stale = stale_parts(text, rows)
        print(f"stale: {', '.join(stale)}; run `make zoo`" if stale else "the zoo tables are current")
        sys.exit(1 if stale else 0)
    README.write_text(render(text, rows))
    print(f"updated {README} and {write_zoo_table(rows)}")
