"""`kinetoscope demo --model NAME`: the plumbing (model, its registered recipe, run folder), training stubbed."""

import pytest

import kinetoscope.engine.demo as demo
from kinetoscope.cli import main as cli_main
from kinetoscope.models import get_model_config


@pytest.fixture
def stubbed(monkeypatch):
    """The demo with its dataset writer and trainer replaced by recorders."""
    seen = {}

    def fake_write(out, **spec):
        seen["spec"] = spec
        out.mkdir(parents=True, exist_ok=True)
        for split in ("train", "val"):
            (out / f"{split}.csv").write_text("path,label\n")

    def fake_train(cfg):
        seen["cfg"] = cfg
        return {"output": cfg.output, "metrics": {"top1": 100.0}}

    monkeypatch.setattr(demo, "write_synthetic_dataset", fake_write)
    monkeypatch.setattr(demo, "train", fake_train)
    return seen


@pytest.mark.parametrize("model", ["pst_nano", "dualformer_nano"])
def test_demo_trains_the_named_model_with_its_registered_recipe(stubbed, tmp_path, model):
    demo.run_demo(tmp_path, epochs=1, per_class=2, model=model)
    cfg, recipe = stubbed["cfg"], get_model_config(model).recipe
    assert cfg.model == model and cfg.epochs == 1 and cfg.flip is False
    for key in ("lr", "warmup_epochs", "batch_size", "weight_decay"):
        if key in recipe:
            assert getattr(cfg, key) == recipe[key]
    assert cfg.output.endswith("run" if model == demo.DEMO_MODEL else f"run_{model}")
    assert stubbed["spec"]["classes"] == demo.DEMO_CLASSES


def test_demo_flag_reaches_run_demo_and_an_unknown_model_is_a_one_line_error(stubbed, tmp_path, capsys):
    assert cli_main(["demo", "--output", str(tmp_path), "--epochs", "1", "--per-class", "2", "--model",
                     "dualformer_nano"]) == 0  # fmt: skip
    assert stubbed["cfg"].model == "dualformer_nano"
    assert cli_main(["demo", "--output", str(tmp_path), "--model", "no_such_nano"]) == 2
    assert "no_such_nano" in capsys.readouterr().err
