import json

import torch
from torch import nn

from kinetoscope import profile
from kinetoscope.cli import main as cli_main
from kinetoscope.layers import Attention
from kinetoscope.profiling import (
    compare_latency,
    count_macs,
    count_params,
    format_zoo_table,
    paper_comparison,
    zoo_rows,
)


def test_linear_and_conv_macs_are_exact():
    model = nn.Sequential(nn.Conv3d(3, 8, (2, 4, 4), (2, 4, 4)), nn.Flatten(), nn.Linear(8 * 2 * 4 * 4, 10))
    gmacs, no_attn = count_macs(model, (1, 3, 4, 16, 16))
    conv = 8 * (2 * 4 * 4) * 3 * (2 * 4 * 4)  # out voxels x kernel volume x in channels
    linear = 8 * 2 * 4 * 4 * 10
    assert gmacs * 1e9 == conv + linear and no_attn == gmacs


class _Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention(16, num_heads=2)

    def forward(self, x):  # (B, C, T, H, W) -> tokens
        return self.attn(x.flatten(2).transpose(1, 2))


def test_attention_matmuls_are_separated():
    n, c = 4 * 2 * 2, 16
    gmacs, no_attn = count_macs(_Tokens(), (1, c, 4, 2, 2))
    linear = n * c * 3 * c + n * c * c
    attn = 2 * n * n * c  # q k^T and attn @ v over all heads
    assert round(no_attn * 1e9) == linear and round(gmacs * 1e9) == linear + attn


def test_profile_reports_params_and_latency():
    model = _Tokens()
    prof = profile(model, (2, 16, 2, 2, 2), latency=True, repeats=2, warmup=1)
    assert prof.params_m * 1e6 == count_params(model) == 16 * 48 + 48 + 16 * 16 + 16
    assert prof.latency_ms > 0 and prof.clips_per_s > 0


def test_models_table_and_profile_cli(capsys):
    assert cli_main(["models", "pst_nano", "--format", "table"]) == 0
    assert "pst_nano" in capsys.readouterr().out
    assert cli_main(["models", "no_such_*"]) == 2
    assert "no registered model matches 'no_such_*'" in capsys.readouterr().err
    assert cli_main(["profile", "pst_nano", "--frames", "8", "--repeats", "2", "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["input_shape"] == [1, 3, 8, 64, 64] and row["latency_ms"] > 0
    assert cli_main(["profile", "no_such_model"]) == 2


def test_zoo_table_markdown():
    row = {
        "name": "x", "input": "8x224", "params_m": 1.0, "paper_params_m": None, "params_delta_pct": None,
        "gflops": 2.0, "paper_gflops": 2.1, "gflops_delta_pct": -4.76, "flop_convention": "mac", "views": "1x1",
        "paper_top1": None, "dataset": None,
    }  # fmt: skip
    table = format_zoo_table([row], markdown=True)
    assert table.splitlines()[2] == "| x | 8x224 | 1.00 | - | - | 2.00 | 2.10 | -4.8 | mac | 1x1 | - |"


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    from kinetoscope import create_model
    from kinetoscope.models import load_checkpoint

    model = create_model("pst_nano", num_classes=3)
    path = tmp_path / "evil.pth"
    torch.save({"model": model.state_dict(), "extra": _Tokens}, path)
    try:
        load_checkpoint(model, path)
    except ValueError as err:
        assert "_Tokens" in str(err) and "kinetoscope convert" in str(err)
        assert "weights_only" not in str(err) and "will likely succeed" not in str(err)
    else:
        raise AssertionError("a checkpoint with a pickled class must be refused")
    good = tmp_path / "good.pth"
    torch.save({"model": model.state_dict()}, good)
    other = create_model("pst_nano", num_classes=5)
    load_checkpoint(other, good)  # head dropped (different classes), backbone loaded
    torch.testing.assert_close(other.patch_embed.proj.weight, model.patch_embed.proj.weight)


def test_zoo_rows_count_afresh_when_the_shipped_table_is_stale(monkeypatch):
    import kinetoscope.profiling as profiling

    shipped = zoo_rows("pst_nano")
    assert shipped == [paper_comparison("pst_nano")]  # the shipped row is what counting gives
    monkeypatch.setattr(profiling, "zoo_fingerprint", lambda: "stale")
    assert profiling.shipped_zoo() is None
    counted = []
    monkeypatch.setattr(profiling, "paper_comparison", lambda name: counted.append(name) or {"name": name})
    assert zoo_rows("pst_nano") == [{"name": "pst_nano"}] and counted == ["pst_nano"]


def test_latency_is_timed_with_the_benchmark_timer(monkeypatch):
    import torch.utils.benchmark as benchmark

    calls = []
    real = benchmark.Timer.timeit

    def spy(self, number=1000000):
        calls.append(number)
        return real(self, number)

    monkeypatch.setattr(benchmark.Timer, "timeit", spy)
    out = compare_latency({"a": nn.Linear(4, 4), "b": nn.Linear(4, 2)}, (2, 4), repeats=3, warmup=1)
    assert set(out) == {"a", "b"} and all(ms > 0 and peak is None for ms, peak in out.values())
    assert calls == [1] * 6  # 3 interleaved repeats of 2 models, one forward each
