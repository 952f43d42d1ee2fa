"""Run logs: a progress bar, TensorBoard scalars, a CSV, and PNG plots at the end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


class RunLogger:
    """Writes ``metrics.csv`` and TensorBoard events in the run folder (main process only).

    ``resume_step``: a run resumed from the checkpoint of that step drops what the interrupted run
    logged after it (CSV rows and TensorBoard events), so every step is logged once.
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True, resume_step: int | None = None) -> None:
        self.out = Path(out_dir)
        self.enabled = enabled
        self._tb = None
        self._csv = self.out / "metrics.csv"
        if enabled:
            self.out.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                truncate_metrics(self._csv, resume_step)
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resume_step is None else resume_step + 1
                self._tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=purge)
            except Exception:  # noqa: BLE001  (tensorboard is optional at run time)
                self._tb = None

    def log(self, step: int, epoch: float, **scalars: float) -> None:
        if not self.enabled:
            return
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        new = not self._csv.exists()
        with open(self._csv, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "epoch", "key", "value"])
            for k, v in scalars.items():
                writer.writerow([step, f"{epoch:.4f}", k, f"{v:.6g}"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the rows of ``metrics.csv`` up to ``last_step``."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= last_step]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            series.setdefault(row["key"], []).append((int(row["step"]), float(row["value"])))
    return series


def plot_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Training loss, learning rate and validation accuracy against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(metrics_csv)
    panels = [k for k in ("train/loss", "train/lr", "val/top1", "val/top5") if k in series]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.2), squeeze=False)
    for ax, key in zip(axes[0], panels):
        steps, values = zip(*series[key])
        few = key.startswith("val") or len(steps) < 30  # a line through one or two points is invisible
        ax.plot(steps, values, marker="o" if few else None, ms=4, lw=1.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_confusion(confusion: np.ndarray, classes: list[str], out_png: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    rows = confusion.sum(1, keepdims=True).clip(min=1)
    norm = confusion / rows
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 40:
        ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(k), classes, fontsize=7)
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
