"""The training loop: one function, read top to bottom.

``train(cfg)`` builds the datasets and the model from a :class:`TrainConfig`, trains with the
optimiser, schedule and augmentation it names, evaluates with multi-view testing, and writes to
``cfg.output``: ``config.yaml``, ``classes.json``, ``last.pth`` / ``best.pth`` (atomic, full state),
``metrics.csv`` + TensorBoard events, ``bad_files.csv`` (if any), ``eval.json``, and the PNG plots.
Launched by ``torchrun`` it trains with DDP (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import MixupCutmix, VideoDataset, collate_skip_none, save_classes, worker_init_fn
from ..models import create_model, get_model_config, load_checkpoint, load_pretrained_2d
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistInfo, EpochShardSampler, all_reduce_mean, cleanup, init_distributed
from .evaluate import evaluate
from .logging import RunLogger, plot_confusion, plot_curves
from .optim import build_optimizer, lr_at, set_lr

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_inputs(cfg: TrainConfig) -> dict:
    """Frames, crop, sampling, views, mean/std: the config's value, else the model variant's default."""
    mcfg = get_model_config(cfg.model)
    return {
        "frames": cfg.frames or mcfg.num_frames,
        "size": cfg.size or mcfg.img_size,
        "sampling": cfg.sampling or mcfg.sampling,
        "views": cfg.views or mcfg.test_views,
        "mean": mcfg.mean,
        "std": mcfg.std,
    }


def with_frames(sampling: str, frames: int) -> str:
    """Keep the protocol's kind and stride, but read ``frames`` frames (``--frames`` overrides)."""
    kind, _, spec = sampling.partition(":")
    stride = spec.split("x")[1] if "x" in spec else None
    return f"{kind}:{frames}x{stride}" if stride else f"{kind}:{frames}"


def build_datasets(cfg: TrainConfig, inputs: dict, classes: list[str] | None = None, out: Path | None = None):
    sampling = with_frames(inputs["sampling"], inputs["frames"])
    common = dict(
        root=cfg.root, format=cfg.format, sampling=sampling, crop_size=inputs["size"], short_side=cfg.short_side,
        mean=inputs["mean"], std=inputs["std"], backend=cfg.backend, on_error=cfg.on_error, report_dir=out,
        seed=cfg.seed,
    )  # fmt: skip
    train_ds = None
    if cfg.train:
        train_ds = VideoDataset(
            cfg.train, train=True, classes=classes, spatial=cfg.spatial, flip=cfg.flip,
            randaugment=tuple(cfg.randaugment) if cfg.randaugment else None, erasing=cfg.erasing, **common,
        )  # fmt: skip
        classes = train_ds.classes
    val_ds = VideoDataset(cfg.val, train=False, views=inputs["views"], classes=classes, **common) if cfg.val else None
    return train_ds, val_ds


def build_model(cfg: TrainConfig, num_classes: int, inputs: dict) -> torch.nn.Module:
    model = create_model(
        cfg.model, num_classes=num_classes, num_frames=inputs["frames"], img_size=inputs["size"], **cfg.model_kwargs
    )
    if cfg.pretrained_2d:
        load_pretrained_2d(model, cfg.pretrained_2d)
    if cfg.pretrained:
        load_checkpoint(model, cfg.pretrained)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def train(cfg: TrainConfig) -> dict:
    info = init_distributed(cfg.device)
    try:
        return _train(cfg, info)
    finally:
        cleanup()


def _train(cfg: TrainConfig, info: DistInfo) -> dict:
    if cfg.amp == "fp16" and info.device.type != "cuda":
        raise ValueError("amp 'fp16' needs CUDA (it uses a gradient scaler); use 'bf16' on CPU")
    if not cfg.train:
        raise ValueError("no training data: pass --train ANNOTATIONS (or set `train:` in the recipe)")
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    out = Path(cfg.output)
    inputs = resolve_inputs(cfg)
    train_ds, val_ds = build_datasets(cfg, inputs, out=out)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(cfg, train_ds.num_classes, inputs).to(info.device)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum, cfg.backbone_lr_mult)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema_decay else None
    amp_dtype = AMP[cfg.amp]
    sampler = EpochShardSampler(len(train_ds), info.rank, info.world_size, shuffle=True, seed=cfg.seed)
    batches_per_epoch = sampler.per_rank // cfg.batch_size
    steps_per_epoch = batches_per_epoch // cfg.accum_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(train_ds)} training videos over {info.world_size} process(es) do not fill one step of "
            f"batch {cfg.batch_size} x {cfg.accum_steps} accumulation; lower --batch-size"
        )
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    milestones = [e * steps_per_epoch for e in cfg.step_epochs]

    epoch, step, best = 0, 0, {"top1": -1.0, "epoch": -1}
    last_path = out / "last.pth"
    if cfg.resume and last_path.exists():
        state = ckpt.load(last_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        epoch, step, best = state["epoch"], state["step"], state["best"]
        ckpt.set_rng_state(state["rng"][info.rank] if isinstance(state["rng"], list) else state["rng"])
        if info.is_main:
            print(f"resumed from {last_path}: epoch {epoch}, step {step}")
    elif cfg.resume and info.is_main:
        print(f"--resume: no checkpoint at {last_path}, starting from scratch")

    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
        save_classes(train_ds.classes, out / "classes.json")
    net = DistributedDataParallel(model) if info.enabled else model
    if cfg.compile:
        net = torch.compile(net)
    mixer = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixer = MixupCutmix(train_ds.num_classes, cfg.mixup, cfg.cutmix, cfg.mixup_prob, 0.5, cfg.label_smoothing)
    logger = RunLogger(out, enabled=info.is_main)

    def save(path: Path, epoch_done: int) -> None:
        rngs = [None] * info.world_size
        if info.enabled:
            torch.distributed.all_gather_object(rngs, ckpt.rng_state())
        else:
            rngs = [ckpt.rng_state()]
        if info.is_main:
            ckpt.save_atomic(
                {
                    "model": model.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch_done,
                    "step": step,
                    "best": best,
                    "rng": rngs,
                    "config": cfg.to_dict(),
                    "classes": train_ds.classes,
                    "model_name": cfg.model,
                },
                path,
            )

    metrics: dict = {}
    while epoch < cfg.epochs:
        done_in_epoch = step - epoch * steps_per_epoch  # > 0 when resuming mid-epoch
        sampler.set_epoch(epoch, start=done_in_epoch * cfg.accum_steps * cfg.batch_size)
        train_ds.set_epoch(epoch)
        loader = DataLoader(
            train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, drop_last=True,
            collate_fn=collate_skip_none if cfg.on_error == "skip" else None, worker_init_fn=worker_init_fn,
            pin_memory=info.device.type == "cuda",
        )  # fmt: skip
        net.train()
        remaining = (steps_per_epoch - done_in_epoch) * cfg.accum_steps
        bar = tqdm(total=remaining, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not info.is_main, leave=False)
        wait = busy = 0.0
        micro, t_end = 0, time.perf_counter()
        for batch in loader:
            if micro >= remaining:
                break
            t_data = time.perf_counter()
            wait += t_data - t_end
            if batch is None:  # every sample of the batch was skipped (on_error="skip")
                micro += 1
                continue
            video = batch["video"].to(info.device, non_blocking=True)
            labels = batch["label"].to(info.device, non_blocking=True)
            if mixer is not None:
                video, targets = mixer(video, labels)
            sync = contextlib.nullcontext()
            if info.enabled and (micro + 1) % cfg.accum_steps:
                sync = net.no_sync()  # accumulate locally; all-reduce on the last micro-batch only
            with sync:
                with torch.autocast(info.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = net(video)
                if mixer is not None:
                    loss = soft_cross_entropy(logits, targets)
                else:
                    loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
                scaler.scale(loss / cfg.accum_steps).backward()
            micro += 1
            if micro % cfg.accum_steps == 0:
                lr = lr_at(
                    step, total_steps, cfg.lr, warmup_steps, cfg.min_lr, cfg.schedule, milestones, cfg.step_gamma
                )
                set_lr(optimizer, lr)
                if cfg.clip_grad:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    update_ema(ema, model, cfg.ema_decay)
                step += 1
                loss_value = all_reduce_mean(loss.item(), info)
                if step % cfg.log_every == 0 or step == 1:
                    logger.log(step, step / steps_per_epoch, **{"train/loss": loss_value, "train/lr": lr})
            t_end = time.perf_counter()
            busy += t_end - t_data
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss.item():.3f}",
                clips_s=f"{video.shape[0] * info.world_size / max(t_end - t_data + 1e-9, 1e-9):.1f}",
                data_wait=f"{100 * wait / max(wait + busy, 1e-9):.0f}%",
            )
            if cfg.max_steps is not None and step >= cfg.max_steps and micro % cfg.accum_steps == 0:
                bar.close()
                save(last_path, epoch)
                logger.close()
                return {"stopped_at_step": step, "output": str(out)}
        bar.close()
        epoch += 1
        if info.is_main:
            print(
                f"epoch {epoch}/{cfg.epochs}  step {step}  loss {loss.item():.4f}  "
                f"data wait {100 * wait / max(wait + busy, 1e-9):.0f}%"
            )
        if val_ds is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            metrics = evaluate(ema or model, val_ds, info, batch_size=max(1, cfg.batch_size // 2), workers=cfg.workers,
                               amp_dtype=amp_dtype)  # fmt: skip
            logger.log(step, epoch, **{"val/top1": metrics["top1"], "val/top5": metrics["top5"]})
            if info.is_main:
                print(f"  val top-1 {metrics['top1']:.2f}  top-5 {metrics['top5']:.2f}  "
                      f"mean class {metrics['mean_class_accuracy']:.2f}")  # fmt: skip
            if metrics["top1"] > best["top1"]:
                best = {"top1": metrics["top1"], "epoch": epoch}
                save(out / "best.pth", epoch)
        save(last_path, epoch)
    logger.close()
    result = {"output": str(out), "best": best, "steps": step}
    if info.is_main:
        if metrics:
            write_eval_report(metrics, val_ds.classes, out)
            result["metrics"] = {k: metrics[k] for k in ("top1", "top5", "mean_class_accuracy")}
        if (out / "metrics.csv").exists():
            result["curves"] = str(plot_curves(out / "metrics.csv", out / "curves.png"))
    return result


def write_eval_report(metrics: dict, classes: list[str], out: Path, name: str = "eval") -> dict:
    """``eval.json`` and ``confusion.png`` beside the checkpoints."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    report = dict(metrics, classes=classes)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    plot_confusion(np.array(metrics["confusion_matrix"]), classes, out / "confusion.png")
    return report


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for float tensors; buffers such as counters are copied."""
    for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.is_floating_point():
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        else:
            e.copy_(p)
