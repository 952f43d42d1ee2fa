"""Where a model looks: a class's heatmap over every input frame, for every family.

Two kinds of method, chosen per family (``method="auto"``):

* **Attention rollout** (CSTransformer). Rollout composes the attention maps of a stack of blocks in
  which every token keeps its place, from the class tokens the head reads back to the patches. CST is
  the one family built that way: its spatial blocks attend over a frame's class token and patches, its
  temporal blocks over the frames at one position, and the head reads the frames' class tokens (with
  ``global_pool="cls"``; ``cst_nano``'s head reads the patch tokens too and gets Grad-CAM). We use the
  class-specific form of Chefer, Gur and Wolf ("Generic Attention-model Explainability", ICCV 2021):
  ``R <- R + mean_heads((dA ⊙ A)^+) R`` per block, ``A`` the block's attention probabilities (with CSSA's
  mixed-in logits, as the model computed them) and ``dA`` the gradient of the class score; the heatmap
  is the head's class tokens' row of ``R`` at the patches. FAM's direct paths from earlier blocks are not
  traced separately (each block's output is already on the residual path ``R`` follows).
* **Grad-CAM** on a token grid of ``forward_intermediates`` for the other families, where rollout does
  not apply: PST and DualFormer attend in (shifted) windows and merge patches between stages, so no token
  keeps its place and there is no class token to start from; STAT pools its queries and keys inside
  attention; SCT's LSH attention forms no attention matrix; DeiT-TPS moves patches between frames inside
  every shifted block. Two forms, with ``A`` the grid's activations and ``dA`` the class score's gradient:

  - ``"hirescam"`` (the default; Draelos and Carin, "Use HiResCAM instead of Grad-CAM", 2020):
    ``ReLU(sum_c dA_c ⊙ A_c)`` token by token;
  - ``"gradcam"`` (Selvaraju et al. 2017): ``ReLU(sum_c w_c A_c)`` with ``w_c`` the gradient averaged over
    the grid (time and space).

  The grid is the deepest one whose gradient is not zero (where the head reads class tokens, the last
  grid's patches never reach the score; ``models._base`` lists which) with at least ``MIN_CAM_SIDE`` (14)
  tokens on a side, else the widest one reaching the score. The deepest grids of the hierarchical
  families are too coarse to show where (7x7 tokens at 224 pixels, 4x4 or 2x2 at 64, each mixing the
  whole clip): at 224 pixels the rule picks their 14x14 grids, at 64 pixels their 16x16 ones.

  Measured on the synthetic motion clips of tests/test_deploy.py (a nano trained for 84 steps to tell
  ``move_left`` from ``move_up``, 16 unseen clips; the heat's share on the moving shapes over the shapes'
  share of the pixels, 1 = no better than uniform; mean, and median in brackets; the same mask turned half
  a turn as a control gets 1.0x-1.4x):

  ======================  ======================  ======================  ======================
  grid (tokens)           pst_nano HiResCAM       pst_nano Grad-CAM       dualformer_nano HiRes /
                                                                          Grad-CAM
  ======================  ======================  ======================  ======================
  16x16 (the rule's)      5.0x (5.0x), min 3.2x   6.6x (7.1x), min 0.2x   1.6x (1.6x) / 3.8x (1.3x)
  8x8                     3.1x                    5.2x                    1.2x / 2.5x
  4x4                     1.2x                    2.0x                    1.0x / 1.6x
  ======================  ======================  ======================  ======================

  HiResCAM is the default because it holds clip by clip: Grad-CAM's one averaged weight vector lights up
  the background on some clips and the shapes very brightly on others, so its mean flatters it. A pst_nano
  trained longer (240 steps, 8 frames, every clip right) makes it plain: Grad-CAM 4.3x on average but a
  median of 0.6x (half the clips below 1x); HiResCAM 3.2x, median 3.0x, every clip at least 1.9x. The
  log-probability of the class as the target instead of its logit changed HiResCAM by at most 0.1x.

Heatmaps are upsampled to the input clip in time and space (trilinear) and scaled to ``[0, 1]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._files import atomic_write, check_output_file

Method = Literal["auto", "hirescam", "gradcam", "rollout"]
METHODS = ("auto", "hirescam", "gradcam", "rollout")
MIN_CAM_SIDE = 14  # ViT-B/16's grid at 224 px, where transformer CAMs are usually taken
OVERLAY_ALPHA = 0.6  # heat colour over the frame at full heat
DISPLAY_SIDE = 192  # frames smaller than this are enlarged for the PNGs and the GIF


def supports_rollout(model: nn.Module) -> bool:
    """CSTransformer whose head reads the class tokens alone (``global_pool="cls"``): rollout starts from
    the tokens the head reads, and with ``"cls_moments"`` it reads the patch tokens as well."""
    from ..models.cstransformer import CSTransformer

    return isinstance(model, CSTransformer) and model.global_pool == "cls"


def gradcam(model: nn.Module, clip: Tensor, class_index: int, form: str = "hirescam") -> tuple[Tensor, str]:
    """Grad-CAM (``form="gradcam"``) or HiResCAM (``"hirescam"``) of ``clip (1, C, T, H, W)`` for
    ``class_index`` on the grid the module docstring chooses -> ``(map (T', H', W'), what was done)``."""
    features, grids = model.forward_intermediates(clip)
    score = model.forward_head(features)[0, class_index]
    grads = torch.autograd.grad(score, grids, allow_unused=True)
    reaching = [i for i, g in enumerate(grads) if g is not None and bool(g.abs().amax() > 0)]
    if not reaching:
        raise ValueError("no token grid reaches the class score (all gradients are zero); cannot explain")
    wide = [i for i in reaching if min(grids[i].shape[-2:]) >= MIN_CAM_SIDE]
    i = max(wide) if wide else max(reaching, key=lambda j: (grids[j].shape[-2:].numel(), j))
    activations, grad = grids[i][0].detach(), grads[i][0]  # (C, T', H', W')
    if form == "gradcam":
        cam = torch.einsum("c,cthw->thw", grad.mean(dim=(1, 2, 3)), activations)
    else:
        cam = (grad * activations).sum(dim=0)
    t, h, w = cam.shape
    name = "Grad-CAM" if form == "gradcam" else "HiResCAM (Grad-CAM without the averaging of the gradient)"
    return cam.clamp(min=0), f"{name} on token grid {i} of {len(grids)} ({t}x{h}x{w} tokens: frames x height x width)"


def cst_rollout(model: nn.Module, clip: Tensor, class_index: int) -> tuple[Tensor, str]:
    """Gradient-weighted attention rollout of a CSTransformer (module docstring) -> ``(map (T, h, w), text)``."""
    from ..layers.attention import record_attention

    with record_attention() as maps:
        score = model(clip)[0, class_index]
    n_spatial, n_temporal = len(model.spatial_blocks), len(model.temporal_blocks)
    if len(maps) != n_spatial + n_temporal:
        raise RuntimeError(f"expected {n_spatial + n_temporal} attention maps from the blocks, got {len(maps)}")
    grads = torch.autograd.grad(score, maps)
    T, N = maps[n_spatial - 1].shape[0], maps[0].shape[-1]  # spatial maps: (T, heads, N, N) for one clip
    relevance = torch.eye(T * N, device=clip.device).view(T, N, T, N)  # R[t, n, t', n']
    for i, (a, g) in enumerate(zip(maps, grads)):
        weighted = (g * a).clamp(min=0).mean(dim=1).detach()  # mean over heads of (dA ⊙ A)^+
        if i < n_spatial:  # (T, N, N): within each frame
            relevance = relevance + torch.einsum("tnm,tmuv->tnuv", weighted, relevance)
        else:  # (N, T, T): along time at each position
            relevance = relevance + torch.einsum("nts,snuv->tnuv", weighted, relevance)
    heat = relevance[:, 0, :, 1:].mean(dim=0)  # the frames' class tokens (the head averages them) -> patches
    gh, gw = clip.shape[-2] // model.patch_size, clip.shape[-1] // model.patch_size
    heat = heat.view(T, gh, gw)
    return heat, (f"gradient-weighted attention rollout (Chefer et al. 2021) over {n_spatial} spatial and "
                  f"{n_temporal} temporal blocks ({T}x{gh}x{gw} tokens)")  # fmt: skip


def explain_clip(model: nn.Module, clip: Tensor, class_index: int | None = None, method: Method = "auto") -> dict:
    """The heatmap of ``clip (1, C, T, H, W)`` for ``class_index`` (default: the predicted class).

    Returns ``{"heatmap": (T, H, W) float32 in [0, 1], "class_index", "probability", "predicted",
    "method": "rollout" | "hirescam" | "gradcam", "detail"}``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "rollout" and not supports_rollout(model):
        what = f"{type(model).__name__} with global_pool={getattr(model, 'global_pool', None)!r}"
        raise ValueError(f"attention rollout applies to a CSTransformer whose head reads its class tokens alone "
                         f"(global_pool='cls'), not {what}; use hirescam or gradcam")  # fmt: skip
    model.eval()
    with torch.no_grad():
        probs = model(clip).float().softmax(-1)[0]
    predicted = int(probs.argmax())
    class_index = predicted if class_index is None else class_index
    use = method if method != "auto" else "rollout" if supports_rollout(model) else "hirescam"
    with torch.enable_grad():
        if use == "rollout":
            heat, detail = cst_rollout(model, clip, class_index)
        else:
            heat, detail = gradcam(model, clip, class_index, use)
    T, H, W = clip.shape[2:]
    heat = F.interpolate(heat[None, None].float(), size=(T, H, W), mode="trilinear", align_corners=False)[0, 0]
    heat = heat.clamp(min=0)
    peak = heat.max()
    heat = heat / peak if peak > 0 else heat
    return {"heatmap": heat.cpu().numpy().astype(np.float32), "class_index": class_index,
            "probability": float(probs[class_index]), "predicted": predicted, "method": use,
            "detail": detail}  # fmt: skip


def explain(
    checkpoint: str | Path,
    video: str | Path,
    class_name: str | None = None,
    method: Method = "auto",
    device: str = "auto",
) -> dict:
    """:func:`explain_clip` on one centred clip of ``video`` with the run's sampling and crop; adds the
    clip's frames as uint8 ``(T, H, W, 3)`` (``"frames"``, what the model saw), ``"class"``, ``"video"``."""
    from .checkpoint import load_trained
    from .config import resolve_inputs
    from .distributed import resolve_device
    from .evaluate import eval_dataset

    dev = resolve_device(device)
    model, classes, cfg, _ = load_trained(checkpoint, dev)
    if class_name is not None and class_name not in classes:
        shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
        raise ValueError(f"--class {class_name!r} is not a class of {checkpoint} ({shown})")
    ds = eval_dataset(cfg, [(str(video), 0)], classes, views="1x1", on_error="raise")
    clip = ds[0]["video"]  # (1, C, T, H, W)
    out = explain_clip(model, clip.to(dev), None if class_name is None else classes.index(class_name), method)
    inputs = resolve_inputs(cfg)
    mean, std = torch.tensor(inputs["mean"]).view(3, 1, 1, 1), torch.tensor(inputs["std"]).view(3, 1, 1, 1)
    frames = ((clip[0] * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 3, 0)  # (T, H, W, 3)
    return dict(out, frames=frames.numpy(), video=str(video), model=cfg.model, **{
        "class": classes[out["class_index"]], "predicted_class": classes[out["predicted"]]})  # fmt: skip


def overlay(frames: np.ndarray, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` frames with the heat colour (matplotlib's ``jet``) blended in where hot."""
    from matplotlib import colormaps

    colours = colormaps["jet"](heatmap)[..., :3]  # (T, H, W, 3) in [0, 1]
    a = alpha * heatmap[..., None]
    return ((1 - a) * frames / 255.0 + a * colours).clip(0, 1).__mul__(255).round().astype(np.uint8)


EXPLANATION_NAMES = ("explanation.gif", "strip.png", "heatmap.npy", "explanation.json")
FRAME_PATTERN = "frame_[0-9][0-9][0-9].png"


def explanation_files(out_dir: str | Path, num_frames: int) -> list[Path]:
    """What :func:`write_explanation` writes into ``out_dir``: the frames, then ``EXPLANATION_NAMES``."""
    d = Path(out_dir)
    return [d / n for n in (*[f"frame_{t:03d}.png" for t in range(num_frames)], *EXPLANATION_NAMES)]


def check_explanation_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Fail before any work when ``out_dir`` is a file or holds any file an explanation writes (without
    ``overwrite``); create it otherwise."""
    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise ValueError(f"--output {d} is a file; give a folder")
    taken = sorted(p.name for p in d.glob(FRAME_PATTERN)) + [n for n in EXPLANATION_NAMES if (d / n).exists()]
    if taken and not overwrite:
        shown = ", ".join(taken[-3:]) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
        raise ValueError(f"--output {d} already holds an explanation ({shown}); pass --overwrite to replace it")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--output {d}: cannot create the folder ({err.strerror})") from None
    return d


def write_explanation(result: dict, out_dir: str | Path, overwrite: bool = False, fps: float = 8.0) -> list[Path]:
    """PNG frames with the heatmap overlaid, an animated GIF, a strip of up to 8 frames with a title,
    the heatmap as ``.npy`` and ``explanation.json`` (class, probability, method) into ``out_dir``. With
    ``overwrite``, frames of an earlier, longer explanation beyond this one's are removed (they would
    pass for part of it)."""
    from PIL import Image

    d = check_explanation_dir(out_dir, overwrite)
    files = explanation_files(d, len(result["frames"]))
    for f in files:
        check_output_file(f, overwrite, "explanation file")
    for stale in set(d.glob(FRAME_PATTERN)) - set(files):
        stale.unlink()
    images = overlay(result["frames"], result["heatmap"])
    scale = max(1, -(-DISPLAY_SIDE // images.shape[1]))
    pictures = [Image.fromarray(im).resize((im.shape[1] * scale, im.shape[0] * scale), Image.BILINEAR) for im in images]
    for picture, path in zip(pictures, files):
        with atomic_write(path, "wb") as f:
            picture.save(f, format="PNG")
    gif, strip, npy, info = files[-4:]
    with atomic_write(gif, "wb") as f:
        pictures[0].save(f, format="GIF", save_all=True, append_images=pictures[1:], duration=int(1000 / fps), loop=0)
    _write_strip(result, images, strip)
    with atomic_write(npy, "wb") as f:
        np.save(f, result["heatmap"])
    keys = ("video", "model", "class", "class_index", "probability", "predicted_class", "method", "detail")
    with atomic_write(info, "w") as f:
        json.dump({k: result[k] for k in keys} | {"heatmap_shape": list(result["heatmap"].shape)}, f, indent=1)
    return files


def _write_strip(result: dict, images: np.ndarray, path: Path, columns: int = 8) -> None:
    from ._figures import pyplot, save_figure

    plt = pyplot()
    picks = np.linspace(0, len(images) - 1, min(columns, len(images))).round().astype(int)
    fig, axes = plt.subplots(1, len(picks), figsize=(1.4 * len(picks), 1.75), squeeze=False)
    for ax, t in zip(axes[0], picks):
        ax.imshow(images[t], interpolation="bilinear")
        ax.set_axis_off()
        ax.set_title(f"frame {t}", fontsize=7)
    method = {"rollout": "attention rollout", "hirescam": "HiResCAM", "gradcam": "Grad-CAM"}[result["method"]]
    fig.suptitle(f"{Path(result['video']).name}: {result['class']} ({result['probability']:.2f}), {method}",
                 fontsize=8)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path)
