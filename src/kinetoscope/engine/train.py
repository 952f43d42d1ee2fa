"""The training loop, read top to bottom: :func:`train` -> :func:`train_one_epoch` -> :func:`optimizer_step`.

``train(cfg)`` builds the datasets and the model from a :class:`TrainConfig`, trains with the
optimiser, schedule and augmentation it names, evaluates with multi-view testing, and writes to
``cfg.output``: ``config.yaml``, ``classes.json``, ``last.pth`` / ``best.pth`` (atomic, full state),
``metrics.csv`` + TensorBoard events, ``bad_files.csv`` (if any), ``eval.json``, and the PNG plots.
Launched by ``torchrun`` it trains with DDP (gloo on CPU, NCCL on GPU).

Nothing is lost or overwritten: a non-empty run folder needs ``resume`` or ``overwrite``; ``last.pth``
is written at every epoch end, every ``save_every_minutes`` and on SIGINT/SIGTERM (after the step in
flight, then the run stops with the command that resumes it); a resumed run continues bit for bit and
refuses a checkpoint whose model, input, batch or data differ from the config.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .._files import write_text_atomic
from .._progress import progress as progress_bar
from ..data import VideoDataset, VideoMixup, collate_valid, save_classes, worker_init_fn
from ..models import load_checkpoint, load_pretrained_2d
from . import checkpoint as ckpt
from .config import RUN_CONTROL, TrainConfig, check_model_arguments, resolve, resolve_inputs
from .distributed import DistInfo, EpochShardSampler, agree, all_reduce_mean, barrier, cleanup, init_distributed
from .evaluate import clip_dataset, eval_dataset, evaluate, summary
from .logging import RunLogger, plot_confusion, plot_curves
from .optim import build_optimizer, lr_at, set_lr

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# what a run writes into its folder; --overwrite (or a fresh --resume) clears exactly these
RUN_FILES = ("config.yaml", "classes.json", "last.pth", "best.pth", "metrics.csv", "bad_files.csv", "eval.json",
             "curves.png", "confusion.png", "tensorboard")  # fmt: skip
# what a run stopped before its first checkpoint leaves: --resume may start it again over these
NEVER_CHECKPOINTED = ("config.yaml", "classes.json", "metrics.csv", "bad_files.csv", "tensorboard")
# a resumed run must read the same clips in the same order with the same model: these must match
RESUME_MUST_MATCH = ("model", "model_kwargs", "frames", "size", "sampling", "batch_size", "accum_steps", "train",
                     "root", "format", "seed", "on_error")  # fmt: skip


# ---------------------------------------------------------------------------------------------- build
def build_datasets(cfg: TrainConfig, classes: list[str] | None = None, out: Path | None = None):
    """Training clips (augmented) and validation videos (all views; unreadable ones excluded, not
    substituted); images as clips of identical frames for an image run. ``cfg`` is resolved
    (:func:`~kinetoscope.engine.config.resolve`)."""
    inputs = resolve_inputs(cfg)
    train_ds = None
    if cfg.train:
        short_side, scale = cfg.short_side, {}  # {}: the transform's default jitter of short_side
        if cfg.train_short_side is not None and train_short_side_ignored(cfg) is None:
            short_side, scale = inputs["size"], {"jitter": tuple(cfg.train_short_side)}
        train_ds = clip_dataset(
            inputs, cfg.train, "1x1", root=cfg.root, format=cfg.format, train=True,
            crop_size=inputs["size"], short_side=short_side, mean=inputs["mean"], std=inputs["std"], **scale,
            backend=cfg.backend, on_error=cfg.on_error, report_dir=out, seed=cfg.seed, classes=classes,
            spatial=cfg.spatial, flip=cfg.flip, randaugment=tuple(cfg.randaugment) if cfg.randaugment else None,
            erasing=cfg.erasing,
        )  # fmt: skip
        classes = train_ds.classes
    val_ds = None
    if cfg.val:
        on_error = "raise" if cfg.on_error == "raise" else "exclude"
        val_ds = eval_dataset(cfg, cfg.val, classes, cfg.root, on_error=on_error, report_dir=out)
    return train_ds, val_ds


def train_short_side_ignored(cfg: TrainConfig) -> str | None:
    """Why a set ``train_short_side`` does not apply (``None``: it applies, or it is unset). A recipe's
    key must not block a user's flag, so the run goes on; the caller says so in one line."""
    if cfg.train_short_side is None:
        return None
    if cfg.short_side is not None:
        return f"short_side={cfg.short_side} is set and wins"
    if cfg.spatial != "jitter":
        return f"spatial={cfg.spatial!r} draws its own crop scales"
    return None


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    model = ckpt.model_from_config(cfg, num_classes)
    if cfg.pretrained_2d:
        load_pretrained_2d(model, cfg.pretrained_2d)
    if cfg.pretrained:
        load_checkpoint(model, cfg.pretrained)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


@dataclass
class Parts:
    """What trains: the model (owns the weights), ``net`` (the model under DDP/compile, what the
    forward goes through), optimiser, grad scaler, EMA and the mixup/cutmix batch augmentation."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: nn.Module | None = None  # timm ModelEmaV3; its .module is the averaged model
    mixer: VideoMixup | None = None


@dataclass
class Position:
    """Where the run stands; with the RNG states it is what a checkpoint restores."""

    epoch: int = 0
    step: int = 0
    best: dict = field(default_factory=lambda: {"top1": -1.0, "epoch": -1})


@dataclass
class Plan:
    """Step arithmetic of the run and the learning rate as a pure function of the step."""

    steps_per_epoch: int
    schedule: partial  # lr_at with everything but the step bound

    def lr(self, step: int) -> float:
        return self.schedule(step)


# ---------------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig) -> dict:
    """Train (or resume) the run ``cfg`` describes; see the module docstring for what it writes.

    Returns ``{"output", "steps", "best", "metrics"...}``; a run stopped by ``max_steps`` returns
    ``stopped_at_step``, one stopped by a signal ``interrupted`` (the signal's name) and ``resume``.
    """
    info = init_distributed(cfg.device)
    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        with StopSignals(info) as stop:
            return _train(cfg, info, stop)
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        cleanup()


def _train(cfg: TrainConfig, info: DistInfo, stop: StopSignals) -> dict:
    if cfg.amp == "fp16" and info.device.type != "cuda":
        raise ValueError("amp 'fp16' needs CUDA (it uses a gradient scaler); use 'bf16' on CPU")
    if not cfg.train:
        raise ValueError("no training data: pass --train ANNOTATIONS (or set `train:` in the recipe)")
    check_model_arguments(cfg)
    cfg = resolve(cfg)
    out = Path(cfg.output)
    state = load_resume_state(prepare_run_folder(out, cfg, info), cfg, info)
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)

    train_ds, val_ds = build_datasets(cfg, out=out)
    if info.is_main and (why := train_short_side_ignored(cfg)):
        # a status line (stderr), so a run that then stops on bad input still prints only its one error line
        print(
            f"kinetoscope: note: train_short_side {cfg.train_short_side} not used: {why}", file=sys.stderr, flush=True
        )
    if state is not None and state["classes"] != train_ds.classes:
        raise ValueError(f"cannot resume {out}: the classes of {cfg.train} are not those the checkpoint was trained "
                         f"on ({len(train_ds.classes)} vs {len(state['classes'])}); data differ")  # fmt: skip
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(cfg, train_ds.num_classes).to(info.device)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum, cfg.backbone_lr_mult,
                                cfg.layer_decay)  # fmt: skip
    parts = Parts(model, model, optimizer, torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16"))
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3

        parts.ema = ModelEmaV3(model, decay=cfg.ema_decay)
    if cfg.mixup > 0 or cfg.cutmix > 0:
        parts.mixer = VideoMixup(train_ds.num_classes, cfg.mixup, cfg.cutmix, cfg.mixup_prob, 0.5, cfg.label_smoothing)
    plan = make_plan(cfg, len(train_ds), info)
    seed_everything(cfg.seed + 10_007 * (info.rank + 1))  # dropout, mixup: a function of (seed, rank) alone

    pos = Position()
    if state is not None:
        pos = restore(parts, state, info)
        if info.is_main:
            print(f"resumed from {out / 'last.pth'}: epoch {pos.epoch}, step {pos.step}", flush=True)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
        save_classes(train_ds.classes, out / "classes.json")
    if info.enabled:
        parts.net = DistributedDataParallel(model)
    if cfg.compile:
        parts.net = torch.compile(parts.net)
    logger = RunLogger(out, enabled=info.is_main, resume_step=pos.step if state is not None else None)
    saver = Saver(out, cfg, info, train_ds.classes, len(train_ds))

    metrics: dict = {}
    try:
        while pos.epoch < cfg.epochs:
            stopped, mean_loss = train_one_epoch(parts, train_ds, cfg, info, pos, plan, logger, saver, stop)
            if stopped:
                saver.save(out / "last.pth", parts, pos)
                return saver.stopped(stopped, pos, stop)
            pos.epoch += 1
            if info.is_main:
                loss = f"  loss {mean_loss:.4f}" if mean_loss is not None else ""
                print(f"epoch {pos.epoch}/{cfg.epochs}  step {pos.step}{loss}", flush=True)
            if val_ds is not None and (pos.epoch % cfg.eval_every == 0 or pos.epoch == cfg.epochs):
                metrics = evaluate(parts.ema.module if parts.ema else model, val_ds, info, batch_size=cfg.batch_size,
                                   workers=cfg.workers, amp_dtype=AMP[cfg.amp], progress=True)  # fmt: skip
                logger.log(pos.step, pos.epoch, **{"val/top1": metrics["top1"], "val/top5": metrics["top5"]})
                if info.is_main:
                    print(f"  val {summary(metrics)}", flush=True)
                if metrics["top1"] > pos.best["top1"]:
                    pos.best = {"top1": metrics["top1"], "epoch": pos.epoch}
                    saver.save(out / "best.pth", parts, pos)
            saver.save(out / "last.pth", parts, pos)
            if stop.requested(info):  # a signal during evaluation: the epoch is saved, stop here
                return saver.stopped("signal", pos, stop)
    finally:
        logger.close()
    result = {"output": str(out), "best": pos.best, "steps": pos.step}
    if info.is_main:
        if metrics:
            write_eval_report(metrics, val_ds.classes, out)
            result["metrics"] = {k: metrics[k] for k in ("top1", "top5", "mean_class_accuracy", "num_videos",
                                                         "num_unreadable")}  # fmt: skip
        if (out / "metrics.csv").exists():
            result["curves"] = str(plot_curves(out / "metrics.csv", out / "curves.png"))
    return result


def train_one_epoch(
    parts: Parts,
    dataset: VideoDataset,
    cfg: TrainConfig,
    info: DistInfo,
    pos: Position,
    plan: Plan,
    logger: RunLogger,
    saver: Saver,
    stop: StopSignals,
) -> tuple[str | None, float | None]:
    """Train the rest of epoch ``pos.epoch`` (all of it, or from where a resumed run left off).

    Returns ``(why it stopped early or None, mean logged loss of the epoch's steps or None)``. After each
    optimiser step it checkpoints when ``save_every_minutes`` have passed, and stops when ``max_steps``
    is reached or a signal arrived (every rank takes these decisions together).
    """
    done = pos.step - pos.epoch * plan.steps_per_epoch  # > 0 when resuming mid-epoch
    remaining = (plan.steps_per_epoch - done) * cfg.accum_steps  # micro-batches
    if remaining <= 0:  # a run stopped on the epoch's last step
        return None, None
    sampler = EpochShardSampler(len(dataset), info.rank, info.world_size, shuffle=True, seed=cfg.seed)
    sampler.set_epoch(pos.epoch, start=done * cfg.accum_steps * cfg.batch_size)
    dataset.set_epoch(pos.epoch)
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, drop_last=True,
        collate_fn=collate_valid if cfg.on_error == "skip" else None, worker_init_fn=worker_init_fn,
        pin_memory=info.device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed * 100_003 + pos.epoch),  # worker seeds: not the global RNG
    )  # fmt: skip
    parts.net.train()
    amp_dtype = AMP[cfg.amp]
    bar = progress_bar(total=remaining, desc=f"epoch {pos.epoch + 1}/{cfg.epochs}", enabled=info.is_main, leave=False,
                       unit="batch")  # fmt: skip
    micro, micro_losses, step_losses = 0, [], []
    wait = busy = 0.0
    t_end = time.perf_counter()
    try:
        for batch in loader:
            if micro >= remaining:
                break
            t_data = time.perf_counter()
            wait += t_data - t_end
            last_micro = (micro + 1) % cfg.accum_steps == 0
            sync = contextlib.nullcontext()
            if info.enabled and not last_micro:
                sync = parts.net.no_sync()  # accumulate locally; all-reduce on the last micro-batch only
            with sync:
                loss = forward_backward(parts, batch, cfg, info, amp_dtype)
            if loss is not None:
                micro_losses.append(loss)
            micro += 1
            if last_micro:
                lr = plan.lr(pos.step)
                optimizer_step(parts, lr, cfg.clip_grad)
                pos.step += 1
                # the logged loss is the mean over the step's micro-batches and processes
                step_loss = all_reduce_mean(sum(micro_losses) / max(len(micro_losses), 1), info)
                step_losses.append(step_loss)
                micro_losses = []
                end_of_epoch = micro >= remaining
                if pos.step % cfg.log_every == 0 or pos.step == 1 or end_of_epoch:
                    logger.log(pos.step, pos.step / plan.steps_per_epoch, **{"train/loss": step_loss, "train/lr": lr})
                save_due, signalled = agree([saver.due(), stop.requested()], info)
                if cfg.max_steps is not None and pos.step >= cfg.max_steps:
                    return "max_steps", _mean(step_losses)
                if signalled:
                    return "signal", _mean(step_losses)
                if save_due and not end_of_epoch:
                    saver.save(saver.out / "last.pth", parts, pos)
            t_end = time.perf_counter()
            busy += t_end - t_data
            bar.update(1)
            bar.set_postfix(loss=f"{step_losses[-1]:.3f}" if step_losses else "-",
                            data_wait=f"{100 * wait / max(wait + busy, 1e-9):.0f}%")  # fmt: skip
    finally:
        bar.close()
    return None, _mean(step_losses)


def forward_backward(parts: Parts, batch: dict, cfg: TrainConfig, info: DistInfo, amp_dtype) -> float | None:
    """Loss of one micro-batch, backpropagated (scaled for accumulation); ``None`` for a batch whose clips
    were all unreadable (``on_error="skip"``)."""
    if "video" not in batch:  # every clip of the batch was skipped
        if info.enabled:  # DDP still expects this rank's gradients: contribute zeros through the graph
            size = (1, 3, cfg.frames, cfg.size, cfg.size)
            (parts.net(torch.zeros(size, device=info.device)).sum() * 0).backward()
        return None
    video = batch["video"].to(info.device, non_blocking=True)
    labels = batch["label"].to(info.device, non_blocking=True)
    if parts.mixer is not None:
        video, targets = parts.mixer(video, labels)  # soft targets, label smoothing included
    with torch.autocast(info.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = parts.net(video)
    if parts.mixer is not None:
        loss = F.cross_entropy(logits.float(), targets)  # probability targets
    else:
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
    parts.scaler.scale(loss / cfg.accum_steps).backward()
    return loss.item()


def optimizer_step(parts: Parts, lr: float, clip_grad: float | None = None) -> None:
    """Set the learning rate, clip the gradient norm, step (through the grad scaler), clear the
    gradients and update the EMA."""
    set_lr(parts.optimizer, lr)
    if clip_grad:
        parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), clip_grad)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.ema is not None:
        parts.ema.update(parts.model)


def seed_everything(seed: int) -> None:
    """torch, NumPy's global generator (timm's mixup draws from it) and Python's ``random``."""
    import random

    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (the legacy global state is what timm uses)
    random.seed(seed)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def make_plan(cfg: TrainConfig, num_videos: int, info: DistInfo) -> Plan:
    per_rank = -(-num_videos // info.world_size)
    steps_per_epoch = per_rank // cfg.batch_size // cfg.accum_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"{num_videos} training videos over {info.world_size} process(es) do not fill one step of "
            f"batch {cfg.batch_size} x {cfg.accum_steps} accumulation; lower --batch-size"
        )
    schedule = partial(
        lr_at, total_steps=cfg.epochs * steps_per_epoch, base_lr=cfg.lr,
        warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)), min_lr=cfg.min_lr, schedule=cfg.schedule,
        milestones=[e * steps_per_epoch for e in cfg.step_epochs], gamma=cfg.step_gamma,
    )  # fmt: skip
    return Plan(steps_per_epoch, schedule)


# ---------------------------------------------------------------------------------- the run's folder
def prepare_run_folder(out: Path, cfg: TrainConfig, info: DistInfo) -> Path | None:
    """The checkpoint to resume from, or ``None`` for a fresh run, after making sure nothing a user made
    is replaced: a non-empty folder needs ``resume`` (continue it) or ``overwrite`` (clear the run's files)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file, not a run folder")
    last = out / "last.pth"
    present = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []
    listed = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
    if cfg.resume and last.exists():
        return last
    if present and not cfg.overwrite:
        if not cfg.resume:
            raise ValueError(f"{out} already holds a run ({listed}); pass --resume to continue it, --overwrite to "
                             "replace it, or choose another --output")  # fmt: skip
        if not set(present) <= set(NEVER_CHECKPOINTED):
            raise ValueError(f"--resume: {out} has no last.pth to resume from but holds {listed}; pass --overwrite "
                             "to start the run again there, or choose another --output")  # fmt: skip
    if cfg.resume and info.is_main:
        print(f"--resume: no checkpoint at {last}, starting from scratch", flush=True)
    clear = bool(present)  # --overwrite, or the logs of a run stopped before its first checkpoint
    barrier(info)  # every rank has looked before rank 0 clears
    if clear and info.is_main:
        import shutil

        for name in RUN_FILES:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    barrier(info)
    return None


def load_resume_state(path: Path | None, cfg: TrainConfig, info: DistInfo) -> dict | None:
    """The checkpoint to continue from, after checking it describes this run (else one line naming the
    difference)."""
    if path is None:
        return None
    try:
        state = ckpt.load(path)
    except ValueError as err:
        raise ValueError(f"cannot resume: {err}. Remove {path} to start again, or pass --overwrite") from None
    saved = state.get("config") or {}
    now = cfg.to_dict()
    for key in RESUME_MUST_MATCH:
        if key in saved and saved[key] != now[key]:
            raise ValueError(f"cannot resume {path.parent}: {key} differs (checkpoint {saved[key]!r}, now "
                             f"{now[key]!r}); use the run's settings, or another --output")  # fmt: skip
    world = state.get("world_size", len(state["rng"]) if isinstance(state.get("rng"), list) else 1)
    if world != info.world_size:
        raise ValueError(f"cannot resume {path.parent}: it was trained by {world} process(es), this run has "
                         f"{info.world_size}; the data order and batches would differ")  # fmt: skip
    changed = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in now if k in saved and saved[k] != now[k]
               and k not in (*RUN_CONTROL, "output")]  # fmt: skip
    if changed and info.is_main:
        print(f"resuming with changed settings: {'; '.join(changed)}", flush=True)
    return state


def restore(parts: Parts, state: dict, info: DistInfo) -> Position:
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scaler.load_state_dict(state["scaler"])
    if parts.ema is not None:
        if state.get("ema") is None:
            raise ValueError("cannot resume: ema_decay is set but the checkpoint has no EMA weights")
        parts.ema.module.load_state_dict(state["ema"])
    ckpt.set_rng_state(state["rng"][info.rank] if isinstance(state["rng"], list) else state["rng"])
    return Position(state["epoch"], state["step"], dict(state["best"]))


class Saver:
    """Writes checkpoints (a collective: every rank's RNG state goes in) and keeps the save clock."""

    def __init__(self, out: Path, cfg: TrainConfig, info: DistInfo, classes: list[str], num_videos: int) -> None:
        self.out, self.cfg, self.info, self.classes, self.num_videos = out, cfg, info, classes, num_videos
        self.last = time.monotonic()

    def due(self) -> bool:
        minutes = self.cfg.save_every_minutes
        return minutes > 0 and time.monotonic() - self.last >= 60 * minutes

    def save(self, path: Path, parts: Parts, pos: Position) -> None:
        rngs = [None] * self.info.world_size
        if self.info.enabled:
            torch.distributed.all_gather_object(rngs, ckpt.rng_state())
        else:
            rngs = [ckpt.rng_state()]
        if self.info.is_main:
            config = {k: v for k, v in self.cfg.to_dict().items() if k not in RUN_CONTROL}
            ckpt.save_atomic(
                {
                    "model": parts.model.state_dict(),
                    "ema": parts.ema.module.state_dict() if parts.ema is not None else None,
                    "optimizer": parts.optimizer.state_dict(),
                    "scaler": parts.scaler.state_dict(),
                    "epoch": pos.epoch,
                    "step": pos.step,
                    "best": pos.best,
                    "rng": rngs,
                    "world_size": self.info.world_size,
                    "config": config,
                    "classes": self.classes,
                    "num_train_videos": self.num_videos,
                    "model_name": self.cfg.model,
                },
                path,
            )
        self.last = time.monotonic()

    def stopped(self, why: str, pos: Position, stop: StopSignals) -> dict:
        result = {"output": str(self.out), "steps": pos.step, "epoch": pos.epoch, "best": pos.best}
        resume = f"kinetoscope train --output {self.out} --resume"
        if why == "max_steps":
            return dict(result, stopped_at_step=pos.step)
        name = signal.Signals(stop.signum).name if stop.signum else "signal"
        if self.info.is_main:
            print(f"{name}: stopped at step {pos.step} (epoch {pos.epoch + 1}/{self.cfg.epochs}), saved "
                  f"{self.out / 'last.pth'}; resume with: {resume}", file=sys.stderr, flush=True)  # fmt: skip
        return dict(result, interrupted=name, signum=stop.signum, resume=resume)


class StopSignals:
    """SIGINT/SIGTERM during training: the first asks the loop to checkpoint and stop after the step in
    flight; a second one stops at once (``KeyboardInterrupt``). Installed only in the main thread."""

    def __init__(self, info: DistInfo | None = None) -> None:
        self.signum: int | None = None
        self.info = info
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self.info is None or self.info.is_main:
            print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step (again to stop at once)",
                  file=sys.stderr, flush=True)  # fmt: skip

    def requested(self, info: DistInfo | None = None) -> bool:
        if info is not None:
            return agree([self.signum is not None], info)[0]
        return self.signum is not None


# --------------------------------------------------------------------------------------------- report
def write_eval_report(metrics: dict, classes: list[str], out: Path, name: str = "eval") -> dict:
    """``eval.json`` and ``confusion.png`` beside the checkpoints."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    report = dict(metrics, classes=classes)
    write_text_atomic(out / f"{name}.json", json.dumps(report, indent=1))
    plot_confusion(np.array(metrics["confusion_matrix"]), classes, out / "confusion.png")
    return report
