import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kinetoscope import get_model_config, list_models
from kinetoscope.cli import main as cli_main
from kinetoscope.data import write_synthetic_dataset
from kinetoscope.engine import TrainConfig, compute_metrics, load_config, parse_set, train
from kinetoscope.engine import checkpoint as ckpt
from kinetoscope.engine.evaluate import predict_views
from kinetoscope.engine.logging import read_metrics
from kinetoscope.engine.optim import lr_at, param_groups

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


@pytest.mark.parametrize("name", list_models("*_nano"))
def test_two_steps_and_an_evaluation_for_every_nano(tiny_data, tmp_path, name):
    frames, size = get_model_config(name).min_input
    frames, size = max(frames, 8), max(size, 32)
    result = train(_cfg(tiny_data, tmp_path, model=name, frames=frames, size=size, epochs=1, max_steps=None))
    assert result["steps"] == 4 and result["metrics"]["top1"] >= 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["num_videos"] == 3 and len(report["per_video"]) == 3
    assert (tmp_path / "best.pth").exists() and (tmp_path / "curves.png").exists()


def test_kill_and_resume_gives_identical_weights(tiny_data, tmp_path):
    straight = train(_cfg(tiny_data, tmp_path / "a", val=None))
    assert straight["steps"] == 8
    stopped = train(_cfg(tiny_data, tmp_path / "b", val=None, max_steps=3))  # "killed" mid-epoch 1
    assert stopped["stopped_at_step"] == 3
    train(_cfg(tiny_data, tmp_path / "b", val=None, resume=True))
    a = ckpt.load(tmp_path / "a/last.pth")["model"]
    b = ckpt.load(tmp_path / "b/last.pth")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = read_metrics(tmp_path / "a/metrics.csv")["train/loss"]
    lb = read_metrics(tmp_path / "b/metrics.csv")["train/loss"]
    assert la == lb  # the resumed run logs the remaining steps with the same losses


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


def test_metrics_against_hand_computed_values():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    labels = np.array([0, 2, 2, 1])
    m = compute_metrics(probs, labels, num_classes=3, topk=(1, 2))
    assert m["top1"] == 50.0  # videos 0 and 2
    assert m["top2"] == 100.0
    assert m["per_class_accuracy"] == [100.0, 0.0, 50.0]
    assert m["mean_class_accuracy"] == pytest.approx(50.0)
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]


def test_multi_view_averages_softmax():
    class Lookup(torch.nn.Module):
        def forward(self, x):  # logits are the first pixel of each view
            return x[:, :2, 0, 0, 0]

    video = torch.zeros(1, 2, 2, 1, 1, 1)
    video[0, 0, :, 0, 0, 0] = torch.tensor([2.0, 0.0])
    video[0, 1, :, 0, 0, 0] = torch.tensor([0.0, 4.0])
    got = predict_views(Lookup(), video)
    expected = (torch.tensor([2.0, 0.0]).softmax(0) + torch.tensor([0.0, 4.0]).softmax(0)) / 2
    torch.testing.assert_close(got[0], expected)


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "hook": TrainConfig}, path)
    with pytest.raises(ValueError, match="weights_only"):
        ckpt.load(path)
    good = tmp_path / "good.pth"
    ckpt.save_atomic({"step": 3, "w": torch.ones(2)}, good)
    assert ckpt.load(good)["step"] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


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


def test_config_overlay_and_errors(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: pst_t\nlr: 0.002\nepochs: 30\n")
    cfg = load_config(recipe, {"lr": 0.01} | parse_set(["model_kwargs={drop_path_rate: 0.2}", "amp=bf16"]))
    assert (cfg.model, cfg.lr, cfg.epochs, cfg.amp) == ("pst_t", 0.01, 30, "bf16")
    assert cfg.model_kwargs == {"drop_path_rate": 0.2}
    recipe.write_text("modle: pst_t\n")
    with pytest.raises(ValueError, match="unknown config keys \\['modle'\\]"):
        load_config(recipe)


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_recipes_parse_and_name_registered_models(recipe):
    cfg = load_config(recipe)
    assert cfg.model in list_models(), f"{recipe.name}: {cfg.model} is not registered"
    assert recipe.stem.startswith(cfg.model)
    data = yaml.safe_load(recipe.read_text())
    assert {"epochs", "lr", "optimizer", "batch_size", "sampling", "views"} <= set(data)


def test_cli_train_eval_predict_export_round_trip(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "pst_nano", "--train", str(tiny_data["train"]), "--val", str(tiny_data["val3"]),
            "--frames", "8", "--size", "32", "--epochs", "1", "--batch-size", "4", "--output", str(out),
            "--set", "workers=0", "views=1x3"]  # fmt: skip
    assert cli_main(args) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["views"] == "1x3"
    report = tmp_path / "eval.json"
    assert cli_main(["eval", "--checkpoint", str(out / "last.pth"), "--output", str(report), "--workers", "0"]) == 0
    assert json.loads(report.read_text())["num_videos"] == 3
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
    assert cli_main(["predict", str(tmp_path / "nope.mp4"), "--checkpoint", str(st)]) == 2
