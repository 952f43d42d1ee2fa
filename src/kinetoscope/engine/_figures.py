"""Figures written like every other result: rendered off-screen, then replaced atomically."""

from __future__ import annotations

import io
from pathlib import Path

from .._files import atomic_write


def pyplot():
    """matplotlib's pyplot on the off-screen Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Render ``fig`` as PNG, close it, and write the file atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return Path(path)
