"""Regenerate the model-zoo table in README.md from `kinetoscope models --format markdown`.

Run `make zoo` after adding or changing a variant; tests/test_readme.py fails while the table is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kinetoscope.cli import format_zoo_table
from kinetoscope.models import list_models
from kinetoscope.profiling import paper_comparison

BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def zoo_markdown() -> str:
    return format_zoo_table([paper_comparison(n) for n in list_models()], markdown=True)


def render(readme: str) -> str:
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{zoo_markdown()}\n{END}{tail}"


if __name__ == "__main__":
    text = README.read_text()
    new = render(text)
    if "--check" in sys.argv:
        sys.exit(0 if new == text else 1)
    README.write_text(new)
    print(f"updated {README}")
