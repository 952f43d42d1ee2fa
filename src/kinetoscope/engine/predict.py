"""``predict``: the top classes of video files, with a trained checkpoint and the run's test views."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .checkpoint import load_trained
from .distributed import resolve_device
from .evaluate import eval_dataset, predict_views


def predict(
    checkpoint: str | Path,
    videos: Sequence[str | Path],
    topk: int = 5,
    views: str | None = None,
    device: str = "auto",
    progress: bool = False,
) -> list[dict]:
    """One entry per video, in order: ``{"video", "top": [{"class", "probability"}]}`` for a readable
    file, ``{"video", "error"}`` for one that cannot be read (the others are still predicted)."""
    from .._progress import progress as progress_bar

    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    dev = resolve_device(device)
    model, classes, cfg, _ = load_trained(checkpoint, dev)
    paths = [str(v) for v in videos]
    ds = eval_dataset(cfg, [(p, 0) for p in paths], classes, views=views, on_error="exclude")
    results = []
    for i in progress_bar(range(len(paths)), desc="predicting", enabled=progress, leave=False, unit="video"):
        sample = ds[i]
        if "error" in sample:
            results.append({"video": paths[i], "error": sample["error"]})
            continue
        probs = predict_views(model, sample["video"].unsqueeze(0).to(dev), max_clips=cfg.batch_size)[0]
        top = probs.topk(min(topk, len(classes)))
        ranked = [{"class": classes[j], "probability": round(float(v), 4)} for v, j in zip(top.values, top.indices)]
        results.append({"video": paths[i], "top": ranked})
    return results
