import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from kinetoscope import get_model_config, list_models
from kinetoscope.cli import main as cli_main
from kinetoscope.data import VideoMixup, write_synthetic_dataset
from kinetoscope.engine import TrainConfig, compute_metrics, evaluate, load_config, load_trained, parse_set, train
from kinetoscope.engine import checkpoint as ckpt
from kinetoscope.engine.distributed import DistInfo
from kinetoscope.engine.evaluate import eval_dataset, predict_views
from kinetoscope.engine.logging import read_metrics
from kinetoscope.engine.optim import build_optimizer, lr_at, param_groups
from kinetoscope.engine.train import Parts, forward_backward, optimizer_step

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """8 training videos (one per class) and 3 validation videos of 16 frames at 40 px."""
    d = tmp_path_factory.mktemp("tiny")
    info = write_synthetic_dataset(d, per_class=1, val_per_class=1, frames=16, size=40, workers=2)
    val = (d / "val.csv").read_text().splitlines()
    (d / "val3.csv").write_text("\n".join(val[:4]) + "\n")  # an odd number of videos for 2 ranks
    return {**info, "val3": d / "val3.csv"}


def _cfg(tiny_data, out, **kw) -> TrainConfig:
    base = dict(
        model="pst_nano", train=str(tiny_data["train"]), val=str(tiny_data["val3"]), frames=8, size=32,
        short_side=36, sampling="uniform:8", views="2x1", epochs=2, batch_size=2, lr=1e-3, workers=0,
        output=str(out), log_every=1, seed=3, flip=False, deterministic=True,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _naive_top1(checkpoint: Path) -> tuple[float, list[int]]:
    """Top-1 over the run's validation set by hand: each video's views through the model one by one,
    softmax averaged, argmax against the label."""
    model, classes, cfg, _ = load_trained(checkpoint)
    ds = eval_dataset(cfg, cfg.val, classes)
    preds, hits = [], 0
    with torch.no_grad():
        for i in range(len(ds)):
            sample = ds[i]
            probs = torch.stack([model(view[None])[0].softmax(-1) for view in sample["video"]]).mean(0)
            preds.append(int(probs.argmax()))
            hits += preds[-1] == sample["label"]
    return 100.0 * hits / len(ds), preds


@pytest.mark.parametrize("name", list_models("*_nano"))
def test_two_steps_and_an_evaluation_for_every_nano(tiny_data, tmp_path, name):
    frames, size = get_model_config(name).min_input
    frames, size = max(frames, 8), max(size, 32)
    result = train(_cfg(tiny_data, tmp_path, model=name, frames=frames, size=size, epochs=1))
    assert result["steps"] == 4
    losses = [v for _, v in read_metrics(tmp_path / "metrics.csv")["train/loss"]]
    assert len(losses) == 4 and all(np.isfinite(losses)) and losses[0] > 0
    top1, preds = _naive_top1(tmp_path / "last.pth")
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["top1"] == pytest.approx(top1) and result["metrics"]["top1"] == pytest.approx(top1)
    assert [v["pred"] for v in report["per_video"]] == preds
    assert report["num_videos"] == 3 and report["num_unreadable"] == 0
    assert (tmp_path / "best.pth").exists() and (tmp_path / "curves.png").exists()


def test_deterministic_algorithms_are_restored_after_training(tiny_data, tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    train(_cfg(tiny_data, tmp_path, val=None, epochs=1, max_steps=1, deterministic=True))
    assert not torch.are_deterministic_algorithms_enabled()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    train(cfg)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_data, tmp_path):
    single = train(_cfg(tiny_data, tmp_path / "one", batch_size=4))
    ddp_cfg = _cfg(tiny_data, tmp_path / "two", batch_size=2)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), ddp_cfg), nprocs=2, join=True)
    one = [v for _, v in read_metrics(tmp_path / "one/metrics.csv")["train/loss"]]
    two = [v for _, v in read_metrics(tmp_path / "two/metrics.csv")["train/loss"]]
    assert len(one) == len(two) == single["steps"]
    # same global batch of 4 clips per step: only float summation order differs
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-5)
    report = json.loads((tmp_path / "two/eval.json").read_text())
    assert report["num_videos"] == 3  # 3 videos over 2 ranks: each counted once, none padded
    assert sorted(v["index"] for v in report["per_video"]) == [0, 1, 2]


@pytest.mark.slow
def test_two_process_accumulation_with_no_sync_matches_one_big_batch(tiny_data, tmp_path):
    """2 processes x batch 1 x 2 accumulated micro-batches (DDP's no_sync on the first) take the same
    4 clips per step as 1 process x batch 4: same losses and, to float precision, same weights."""
    train(_cfg(tiny_data, tmp_path / "one", batch_size=4, val=None))
    ddp_cfg = _cfg(tiny_data, tmp_path / "two", batch_size=1, accum_steps=2, val=None)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), ddp_cfg), nprocs=2, join=True)
    one = [v for _, v in read_metrics(tmp_path / "one/metrics.csv")["train/loss"]]
    two = [v for _, v in read_metrics(tmp_path / "two/metrics.csv")["train/loss"]]
    assert len(one) == len(two) == 4
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-5)
    a, b = ckpt.load(tmp_path / "one/last.pth")["model"], ckpt.load(tmp_path / "two/last.pth")["model"]
    # AdamW divides by sqrt(v): where a gradient is near zero, summation-order noise moves an update by a
    # visible fraction of lr (seen: 1.6e-5 on 1 of 36864 weights); a wrong no_sync moves many by ~lr (1e-3)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4)


def test_logged_loss_under_accumulation_is_the_mean_of_the_micro_batches(tiny_data, tmp_path):
    # the same 4 clips make step 1 in both runs: the mean of two micro-batch means is the mean of all four
    train(_cfg(tiny_data, tmp_path / "big", batch_size=4, val=None, epochs=1))
    train(_cfg(tiny_data, tmp_path / "acc", batch_size=2, accum_steps=2, val=None, epochs=1))
    big = read_metrics(tmp_path / "big/metrics.csv")["train/loss"]
    acc = read_metrics(tmp_path / "acc/metrics.csv")["train/loss"]
    assert big[0][0] == acc[0][0] == 1
    assert acc[0][1] == pytest.approx(big[0][1], rel=1e-5)


def test_metrics_against_hand_computed_values():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    labels = np.array([0, 2, 2, 1])
    m = compute_metrics(probs, labels, num_classes=3, topk=(1, 2))
    assert m["top1"] == 50.0  # videos 0 and 2
    assert m["top2"] == 100.0
    assert m["per_class_accuracy"] == [100.0, 0.0, 50.0]
    assert m["mean_class_accuracy"] == pytest.approx(50.0)
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]


class _Lookup(nn.Module):
    """Logits are the first two values of each clip; records the batch of every forward."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return x[:, :2, 0, 0, 0]


def test_multi_view_averages_softmax():
    video = torch.zeros(1, 2, 2, 1, 1, 1)
    video[0, 0, :, 0, 0, 0] = torch.tensor([2.0, 0.0])
    video[0, 1, :, 0, 0, 0] = torch.tensor([0.0, 4.0])
    model = _Lookup()
    got = predict_views(model, video)
    expected = (torch.tensor([2.0, 0.0]).softmax(0) + torch.tensor([0.0, 4.0]).softmax(0)) / 2
    torch.testing.assert_close(got[0], expected)
    torch.testing.assert_close(predict_views(model, video, max_clips=1), got)  # one clip per forward
    assert model.batches == [2, 1, 1]


class _ViewsDataset(torch.utils.data.Dataset):
    """5 videos of 3 views whose logits favour class ``label`` on every view but video 4's."""

    clips, crops, num_classes = 3, 1, 4

    def __init__(self):
        self.samples = [(f"v{i}.mp4", i % 4) for i in range(5)]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        label = self.samples[i][1]
        video = torch.zeros(3, 4, 1, 1, 1)  # (views, C, T, H, W): the model reads C as logits
        video[:, label if i != 4 else (label + 1) % 4] = 3.0
        return {"video": video, "label": label, "index": i}


def test_eval_batch_size_counts_clips_and_the_report_keeps_top_k():
    class Model(_Lookup):
        def forward(self, x):
            self.batches.append(x.shape[0])
            return x[:, :, 0, 0, 0]

    model = Model()
    metrics = evaluate(model, _ViewsDataset(), batch_size=4, workers=0, topk=2)
    assert max(model.batches) <= 4 and sum(model.batches) == 5 * 3  # 3 views: one video per forward of 3
    assert metrics["top1"] == 80.0 and metrics["num_videos"] == 5 and metrics["num_unreadable"] == 0
    row = metrics["per_video"][4]
    assert [c for c, _ in row["top"]] == [1, 0] and "probs" not in row and row["pred"] == 1
    full = evaluate(Model(), _ViewsDataset(), batch_size=7, workers=0, save_probs=True)
    assert len(full["per_video"][0]["probs"]) == 4


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "hook": TrainConfig}, path)
    with pytest.raises(ValueError) as err:
        ckpt.load(path)
    message = str(err.value)
    assert "TrainConfig" in message and "kinetoscope convert" in message and "\n" not in message
    assert "weights_only=False" not in message and "will likely succeed" not in message
    good = tmp_path / "good.pth"
    ckpt.save_atomic({"model": {"w": torch.ones(2)}, "step": 3}, good)
    assert ckpt.load(good)["step"] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    assert good.stat().st_mode & 0o777 == 0o666 & ~_umask()  # like any other file, not 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_lr_schedule_is_a_pure_function():
    assert lr_at(0, 100, 1.0, warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, warmup_steps=10) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, warmup_steps=10, min_lr=0.01) == pytest.approx(0.01)
    steps = [lr_at(s, 18, 0.005, schedule="step", milestones=[5, 14, 16]) for s in (0, 5, 14, 16)]
    assert steps == pytest.approx([0.005, 0.0005, 0.00005, 0.000005])


def test_param_groups_skip_decay_on_norms_biases_and_embeddings():
    from kinetoscope import create_model

    model = create_model("deit_s_tps", num_frames=4, img_size=32, num_classes=3)
    groups = {g["name"]: g for g in param_groups(model, 0.05, backbone_lr_mult=0.1)}
    no_decay = {id(p) for g in groups.values() if g["weight_decay"] == 0 for p in g["params"]}
    named = dict(model.named_parameters())
    assert id(named["pos_embed"]) in no_decay and id(named["cls_token"]) in no_decay
    assert id(named["blocks.0.norm1.weight"]) in no_decay and id(named["head.bias"]) in no_decay
    assert id(named["blocks.0.attn.qkv.weight"]) not in no_decay
    assert groups["head_decay"]["lr_scale"] == 1.0 and groups["backbone_decay"]["lr_scale"] == 0.1


class _Layered(nn.Module):
    """A stem, three blocks and a head, with timm's group_matcher: layer i gets decay ** (4 - i)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(2, 4)
        self.pos = nn.Parameter(torch.zeros(1, 4))
        self.blocks = nn.Sequential(*[nn.Linear(4, 4) for _ in range(3)])
        self.head = nn.Linear(4, 2)

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^stem|^pos", "blocks": r"^blocks\.(\d+)"}

    def no_weight_decay(self) -> set[str]:
        return {"pos"}


def test_layer_decay_groups_come_from_timm_and_the_group_matcher():
    model = _Layered()
    opt = build_optimizer(model, "adamw", lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    expected = {"stem.weight": 0.5**4, "pos": 0.5**4, "blocks.0.weight": 0.5**3, "blocks.2.bias": 0.5**1,
                "head.weight": 1.0}  # fmt: skip
    named = dict(model.named_parameters())
    for name, s in expected.items():
        assert scale[id(named[name])] == pytest.approx(s), name
    assert decay[id(named["pos"])] == 0 and decay[id(named["blocks.0.bias"])] == 0
    assert decay[id(named["blocks.0.weight"])] == 0.05
    with pytest.raises(ValueError, match="group_matcher"):
        build_optimizer(nn.Linear(2, 2), "sgd", lr=1.0, weight_decay=0.0, layer_decay=0.5)


def test_config_overlay_and_errors(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: pst_t\nlr: 0.002\nepochs: 30\n")
    cfg = load_config(recipe, {"lr": 0.01} | parse_set(["model_kwargs={drop_path_rate: 0.2}", "amp=bf16"]))
    assert (cfg.model, cfg.lr, cfg.epochs, cfg.amp) == ("pst_t", 0.01, 30, "bf16")
    assert cfg.model_kwargs == {"drop_path_rate": 0.2}
    recipe.write_text("modle: pst_t\n")
    with pytest.raises(ValueError, match="unknown config keys \\['modle'\\]"):
        load_config(recipe)


def test_config_values_are_coerced_by_type_or_refused_in_one_line(tmp_path):
    # YAML reads 1e-3 without a decimal point as a string; the float field makes it a number
    assert load_config(None, parse_set(["lr=1e-3", "epochs=3.0", "frames=8"])).lr == 0.001
    assert TrainConfig(epochs="4").epochs == 4
    cases = [
        ({"epochs": "one"}, "config epochs: expected an integer, got 'one'"),
        ({"amp": "fp8"}, "config amp: 'fp8' is not one of none, bf16, fp16"),
        ({"optimizer": "lamb"}, "config optimizer: 'lamb' is not one of adamw, sgd"),
        ({"on_error": "ignore"}, "is not one of substitute, skip, raise"),
        ({"spatial": "crop"}, "is not one of jitter, rrc, multiscale"),
        ({"schedule": "linear"}, "is not one of cosine, step"),
        ({"device": "foo"}, "config device: 'foo' is not one of auto, cpu, cuda"),
        ({"frames": 0}, "config frames: must be >= 1, got 0"),
        ({"lr": -1}, "config lr: must be > 0.0"),
        ({"flip": "maybe"}, "config flip: expected true or false"),
        ({"mixup": 0.8, "batch_size": 3}, "even batch_size"),
        ({"sampling": "dense:8"}, "config sampling: unknown sampling protocol"),
        ({"views": "2x2"}, "config views:"),
        ({"train_short_side": [0.8, 1.2]}, "config train_short_side: expected [low, high] multiples of the crop"),
        ({"train_short_side": [1.0]}, "config train_short_side: expected [low, high]"),
    ]
    for values, message in cases:
        with pytest.raises(ValueError) as err:
            load_config(None, values)
        assert message in str(err.value) and "\n" not in str(err.value), (values, str(err.value))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: pst_nano\nlr: [0.1\nepochs: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml:\d+: malformed YAML"):
        load_config(bad)


def test_model_kwargs_are_checked_against_the_constructor():
    from kinetoscope.engine.config import check_model_arguments

    check_model_arguments(TrainConfig(model="pst_nano", model_kwargs={"drop_path_rate": 0.1}))
    with pytest.raises(ValueError, match="'drop_pth_rate' not an argument of PatchShiftSwin .*drop_path_rate"):
        check_model_arguments(TrainConfig(model="pst_nano", model_kwargs={"drop_pth_rate": 0.1}))
    with pytest.raises(ValueError, match="set by frames/size"):
        check_model_arguments(TrainConfig(model="pst_nano", model_kwargs={"num_frames": 4}))


def test_recipe_precedence_defaults_recipe_yaml_flags_set(tmp_path, monkeypatch):
    from kinetoscope.models import _registry

    recipe = {"lr": 0.5, "epochs": 7, "weight_decay": 0.3, "label_smoothing": 0.2, "warmup_epochs": 1.0}
    cfg = _registry._CONFIGS["pst_nano"]
    monkeypatch.setitem(_registry._CONFIGS, "pst_nano", dataclasses.replace(cfg, recipe=recipe))
    yaml_file = tmp_path / "r.yaml"
    yaml_file.write_text("model: pst_nano\nepochs: 9\nweight_decay: 0.1\nlabel_smoothing: 0.15\n")
    flags = {"weight_decay": 0.01, "label_smoothing": 0.12}
    sets = parse_set(["label_smoothing=0.11"])
    got = load_config(yaml_file, flags | sets)
    # defaults < recipe < YAML < flags < --set
    assert got.momentum == TrainConfig.momentum  # default
    assert got.lr == 0.5 and got.warmup_epochs == 1.0  # recipe
    assert got.epochs == 9  # YAML over recipe
    assert got.weight_decay == 0.01  # flag over YAML
    assert got.label_smoothing == 0.11  # --set over flag
    monkeypatch.setitem(_registry._CONFIGS, "pst_nano", dataclasses.replace(cfg, recipe={"lr": "fast"}))
    with pytest.raises(ValueError, match="registered recipe of pst_nano: config lr: expected a number"):
        load_config(None, {"model": "pst_nano"})


def test_resolved_config_is_recorded_with_absolute_paths(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_data["root"])
    train(_cfg(tiny_data, tmp_path / "run", train="train.csv", val="val3.csv", frames=None, sampling=None, views=None,
               epochs=1, max_steps=1))  # fmt: skip
    saved = yaml.safe_load((tmp_path / "run/config.yaml").read_text())
    nano = get_model_config("pst_nano")
    assert saved["train"] == str(Path(tiny_data["root"]).resolve() / "train.csv")
    assert (saved["frames"], saved["sampling"], saved["views"]) == (nano.num_frames, nano.sampling, nano.test_views)
    assert "resume" not in saved and "overwrite" not in saved and "max_steps" not in saved


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_recipes_parse_and_name_registered_models(recipe):
    cfg = load_config(recipe)
    assert cfg.model in list_models(), f"{recipe.name}: {cfg.model} is not registered"
    assert recipe.stem.startswith(cfg.model)
    data = yaml.safe_load(recipe.read_text())
    assert {"epochs", "lr", "optimizer", "batch_size", "sampling", "views"} <= set(data)


# ------------------------------------------------------------------------------------- loop pieces
def _linear_parts(**kw) -> Parts:
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    return Parts(model, model, opt, torch.amp.GradScaler("cuda", enabled=False), **kw)


def test_gradient_clipping_bounds_the_step():
    parts = _linear_parts()
    w0 = parts.model.weight.detach().clone()
    parts.model.weight.grad = torch.full((2, 3), 2.0)  # norm sqrt(6 * 4) = 4.90
    optimizer_step(parts, lr=1.0, clip_grad=0.5)
    step = w0 - parts.model.weight.detach()
    assert float(step.norm()) == pytest.approx(0.5, rel=1e-5)  # SGD lr 1: the step is the clipped gradient
    torch.testing.assert_close(step, torch.full((2, 3), 2.0) * 0.5 / 24**0.5)
    parts.model.weight.grad = torch.full((2, 3), 0.01)  # below the bound: untouched
    w1 = parts.model.weight.detach().clone()
    optimizer_step(parts, lr=1.0, clip_grad=0.5)
    torch.testing.assert_close(w1 - parts.model.weight.detach(), torch.full((2, 3), 0.01))
    assert parts.model.weight.grad is None  # cleared for the next step


def test_ema_follows_the_weights_by_the_decay():
    from timm.utils import ModelEmaV3

    parts = _linear_parts()
    parts.ema = ModelEmaV3(parts.model, decay=0.75)
    expected = parts.model.weight.detach().clone()
    for g in (1.0, -2.0, 0.5):
        parts.model.weight.grad = torch.full((2, 3), g)
        optimizer_step(parts, lr=0.1)
        expected = 0.75 * expected + 0.25 * parts.model.weight.detach()
        torch.testing.assert_close(parts.ema.module.weight, expected)


def test_bf16_autocast_runs_the_model_in_bfloat16_on_cpu():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 5))
    dtypes = []
    model[1].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    parts = Parts(
        model, model, torch.optim.SGD(model.parameters(), lr=0.1), torch.amp.GradScaler("cuda", enabled=False)
    )
    cfg = TrainConfig(amp="bf16", frames=2, size=4)
    batch = {"video": torch.randn(2, 3, 2, 4, 4), "label": torch.tensor([0, 3])}
    loss = forward_backward(parts, batch, cfg, DistInfo(), torch.bfloat16)
    assert dtypes == [torch.bfloat16] and np.isfinite(loss)
    assert model[1].weight.grad.dtype == torch.float32  # master weights stay float32


def test_mixup_in_the_loop_trains_on_the_mixed_clips_and_soft_targets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 4))
    mixer = VideoMixup(4, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    parts = Parts(model, model, torch.optim.SGD(model.parameters(), lr=0.1),
                  torch.amp.GradScaler("cuda", enabled=False), mixer=mixer)  # fmt: skip
    video, labels = torch.randn(4, 3, 2, 4, 4), torch.tensor([0, 1, 2, 3])
    for seed in range(4):  # mixup and cutmix draws
        np.random.seed(seed)  # noqa: NPY002
        mixed, targets = mixer(video.clone(), labels)
        expected = F.cross_entropy(model(mixed), targets).item()
        np.random.seed(seed)  # noqa: NPY002
        got = forward_backward(parts, {"video": video.clone(), "label": labels}, TrainConfig(), DistInfo(), None)
        assert got == pytest.approx(expected, rel=1e-6)
        assert got != pytest.approx(F.cross_entropy(model(video), labels).item(), rel=1e-3)


# ------------------------------------------------------------------------------- runs end to end
@pytest.fixture(scope="module")
def ema_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ema") / "run"
    train(_cfg(tiny_data, out, ema_decay=0.5, epochs=1, log_every=1))
    return out


def test_ema_weights_are_checkpointed_preferred_on_load_and_exported(ema_run, tmp_path):
    state = ckpt.load(ema_run / "last.pth")
    assert state["ema"] is not None
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])
    model, _, _, weights = load_trained(ema_run / "last.pth")
    assert weights == "ema"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["ema"][k]), k
    exported = ckpt.export(ema_run / "last.pth", tmp_path / "w.safetensors")
    weights_st, meta = ckpt.load_model_weights(exported)
    assert meta["weights"] == "ema" and all(torch.equal(weights_st[k], state["ema"][k]) for k in state["ema"])


def test_plots_and_tensorboard_events(ema_run):
    from matplotlib.image import imread
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    image = imread(ema_run / "curves.png")[..., :3]
    line = np.abs(image - np.array([31, 119, 180]) / 255).sum(-1) < 0.1  # matplotlib's first colour
    assert line.sum() > 50, "curves.png has no plotted points"
    assert (ema_run / "confusion.png").stat().st_size > 1000
    events = EventAccumulator(str(ema_run / "tensorboard"))
    events.Reload()
    csv_loss = read_metrics(ema_run / "metrics.csv")["train/loss"]
    tb_loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in tb_loss] == [s for s, _ in csv_loss] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in tb_loss], [v for _, v in csv_loss], rtol=1e-5)
    assert [e.step for e in events.Scalars("val/top1")] == [4]


def test_on_error_skip_trains_on_the_readable_clips(tiny_data, tmp_path):
    root = Path(tiny_data["root"])
    (root / "skip_empty.mp4").write_bytes(b"")
    rows = (root / "train.csv").read_text().splitlines()
    (root / "train_skip.csv").write_text("\n".join([*rows, "skip_empty.mp4,grow", "skip_missing.mp4,grow"]) + "\n")
    result = train(_cfg(tiny_data, tmp_path, train=str(root / "train_skip.csv"), on_error="skip", val=None,
                        epochs=2, batch_size=2))  # fmt: skip
    assert result["steps"] == 10  # 10 entries, batch 2: every step runs, some on one readable clip
    with open(tmp_path / "bad_files.csv") as f:
        lines = f.read().splitlines()
    assert lines[0] == "path,reason" and len(lines) == 3  # two bad files, listed once over two epochs
    assert {ln.split(",")[0] for ln in lines[1:]} == {str(root / "skip_empty.mp4"), str(root / "skip_missing.mp4")}


def test_cli_train_eval_predict_export_round_trip(tiny_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "--model", "pst_nano", "--train", str(tiny_data["train"]), "--val", str(tiny_data["val3"]),
            "--frames", "8", "--size", "32", "--epochs", "1", "--batch-size", "4", "--output", str(out),
            "--set", "workers=0", "views=1x3"]  # fmt: skip
    assert cli_main(args) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["views"] == "1x3"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # eval finds the run's validation set from any directory
    report = tmp_path / "eval.json"
    assert cli_main(["eval", "--checkpoint", str(out / "last.pth"), "--output", str(report), "--workers", "0"]) == 0
    full = json.loads(report.read_text())
    assert full["num_videos"] == 3 and full["top1"] == pytest.approx(_naive_top1(out / "last.pth")[0])
    assert "probs" not in full["per_video"][0] and len(full["per_video"][0]["top"]) == 5
    video = str(Path(tiny_data["root"]) / "val/grow_0000.mp4")
    capsys.readouterr()
    assert cli_main(["predict", video, "--checkpoint", str(out / "best.pth"), "--topk", "3", "--format", "json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert len(pred[0]["top"]) == 3 and sum(t["probability"] for t in pred[0]["top"]) <= 1.0 + 1e-6
    assert cli_main(["export", "--checkpoint", str(out / "last.pth")]) == 0
    st = out / "last.safetensors"
    assert st.exists()
    capsys.readouterr()
    assert cli_main(["predict", video, "--checkpoint", str(st), "--topk", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] in json.loads((out / "classes.json").read_text())
    missing = str(tmp_path / "nope.mp4")
    assert cli_main(["predict", video, missing, video, "--checkpoint", str(st), "--topk", "1"]) == 1
    printed = capsys.readouterr()
    assert printed.out.count(video) == 2  # both good files are printed
    errors = [ln for ln in printed.err.splitlines() if "error" in ln]
    assert len(errors) == 1 and missing in errors[0]


@pytest.mark.parametrize("name", list_models("*_nano"))
def test_nano_recipe_keeps_direction_labels(name):
    """A flip turns synth's move_left into move_right and a clockwise spin into a counter-clockwise one:
    every nano's registered recipe turns flips off, and a flag still wins over it."""
    assert load_config(None, {"model": name}).flip is False
    assert load_config(None, {"model": name, "flip": True}).flip is True
    assert TrainConfig().flip is True  # the default for every other model is unchanged


@pytest.mark.parametrize("train_short_side, short_side, size, expected", [
    (None, None, 32, (37, 46)), ([1.0, 1.25], None, 32, (32, 40)), ([1.0, 1.25], None, 48, (48, 60)),
    ([1.0, 1.25], 40, 32, (40, 50)),  # a short_side the user set wins over a recipe's train_short_side
])  # fmt: skip
def test_train_short_side_scales_with_the_crop_and_leaves_validation_alone(
    tiny_data, tmp_path, train_short_side, short_side, size, expected
):
    """Train crops come from a short side drawn in crop x [low, high] (default: crop x 256/224 x [1, 1.25];
    with short_side set: short_side x [1, 1.25]); the validation transform is the same either way."""
    from torchvision.transforms import v2

    from kinetoscope.engine.train import build_datasets

    cfg = _cfg(tiny_data, tmp_path, size=size, short_side=short_side, train_short_side=train_short_side)
    train_ds, val_ds = build_datasets(cfg)
    resize = next(t for t in train_ds.transform.transforms if isinstance(t, v2.RandomResize))
    assert (resize.min_size, resize.max_size - 1) == expected  # RandomResize draws from [min, max)
    clip = train_ds[0]["video"]
    assert clip.shape[-2:] == (size, size)
    [val_resize] = [t for t in val_ds.transform.transforms if isinstance(t, v2.Resize)]
    assert val_resize.size == [short_side or size]


@pytest.mark.parametrize("kw, reason", [
    (dict(short_side=40), "short_side=40 is set and wins"),
    (dict(short_side=None, spatial="rrc"), "spatial='rrc' draws its own crop scales"),
    (dict(short_side=None, spatial="multiscale"), "spatial='multiscale' draws its own crop scales"),
    (dict(short_side=None), None),
])  # fmt: skip
def test_train_short_side_says_why_it_is_not_used(kw, reason):
    """A recipe's train_short_side that a user's flag overrides is named in the run's output, not dropped
    silently (the run goes on: a recipe key must not block a flag)."""
    from kinetoscope.engine.train import train_short_side_ignored

    cfg = TrainConfig(model="pst_nano", train_short_side=[1.0, 1.25], **kw)
    assert train_short_side_ignored(cfg) == reason
    assert train_short_side_ignored(TrainConfig(model="pst_nano", short_side=40)) is None  # unset: nothing to say
