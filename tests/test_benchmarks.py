"""The benchmark scripts' pure functions (tables, ratios, shares of the peak); nothing here is timed."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kinetoscope._files import replace_between_markers

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


peers = _load("peers")
common = _load("common")
profiles = _load("profiles")
temporal = _load("temporal_truth")


def test_share_of_peak_and_spread():
    # 10 GMACs in 100 ms = 200 GFLOP/s, half of a 400 GFLOP/s peak
    assert common.achieved_fraction(10.0, 100.0, 400.0) == pytest.approx(0.5)
    assert common.median_and_spread([90.0, 100.0, 120.0]) == (100.0, pytest.approx(0.3))
    assert common.median_and_spread([5.0]) == (5.0, 0.0)


def test_entries_pair_each_flagship_with_its_peer_once():
    rows, pairs = peers.entries()
    labels = [e.label for e in rows]
    assert labels == ["pst_t", "dualformer_t", "stat_16", "cst_v2", "sct_s", "swin3d_t", "mvit_v2_s", "vit_b16 x8",
                      "vit_b16 x24"]  # fmt: skip
    assert pairs == {"pst_t": "swin3d_t", "dualformer_t": "swin3d_t", "stat_16": "mvit_v2_s",
                     "cst_v2": "vit_b16 x8", "sct_s": "vit_b16 x24"}  # fmt: skip
    assert {e.label: e.frames for e in rows}["vit_b16 x24"] == 24  # the ViT sees SCT-S's 24 frames
    rows, pairs = peers.entries(frames=4, ours=["cst_v2", "sct_s"])  # one frame count: one ViT row
    assert [e.label for e in rows] == ["cst_v2", "sct_s", "vit_b16 x4"]


def test_inference_rows_ratios_and_peak_shares():
    rows, pairs = peers.entries(ours=["pst_t"])
    times = {("pst_t", "fp32"): [100.0, 110.0, 90.0], ("pst_t", "bf16"): [25.0], ("swin3d_t", "fp32"): [400.0],
             ("swin3d_t", "bf16"): [50.0]}  # fmt: skip
    out = peers.inference_rows(rows, pairs, {"pst_t": 20.0, "swin3d_t": 40.0}, times, {"fp32": 800.0, "bf16": 3200.0})
    pst = out[0]
    assert pst["fp32"]["ms"] == 100.0 and pst["fp32"]["spread"] == pytest.approx(0.2)
    assert pst["fp32"]["peak"] == pytest.approx(0.5)  # 2 x 20 GMACs / 0.1 s = 400 of 800 GFLOP/s
    assert pst["bf16"]["peak"] == pytest.approx(0.5)  # 40 GFLOP / 0.025 s = 1600 of 3200
    assert pst["bf16_gain"] == pytest.approx(4.0)
    assert pst["peer"] == "swin3d_t" and pst["fp32"]["vs_peer"] == pytest.approx(0.25)
    assert pst["bf16"]["vs_peer"] == pytest.approx(0.5)
    assert "peer" not in out[1]


def test_train_rows_compare_checkpointing_with_the_plain_run():
    results = {
        ("pst_t", False): [{"step_ms": [1000.0], "max_rss_mib": 3000.0, "rss_before_mib": 1000.0}],
        ("pst_t", True): [{"step_ms": [1300.0], "max_rss_mib": 2000.0, "rss_before_mib": 1000.0}],
    }
    results[("sct_s", False)] = [{"error": "killed (SIGKILL: out of memory?)", "stderr": []}]
    plain, ckpt, failed = peers.train_rows(results, {"pst_t": 32, "sct_s": 24})
    assert plain["rise_mib"] == 2000.0 and "rise_vs_plain" not in plain
    assert ckpt["rise_vs_plain"] == pytest.approx(0.5) and ckpt["time_vs_plain"] == pytest.approx(1.3)
    assert failed == {"model": "sct_s", "frames": 24, "ckpt": False, "error": "killed (SIGKILL: out of memory?)"}


def test_markdown_has_a_row_per_model_and_the_training_ratio():
    rows, pairs = peers.entries(ours=["pst_t"])
    times = {(label, d): [10.0] for label in ("pst_t", "swin3d_t") for d in ("fp32", "bf16")}
    inf = peers.inference_rows(rows, pairs, {"pst_t": 1.0, "swin3d_t": 1.0}, times, {"fp32": 100.0, "bf16": 200.0})
    train = peers.train_rows(
        {(m, False): [{"step_ms": [1.0], "max_rss_mib": 2.0, "rss_before_mib": 1.0}] for m in ("pst_t", "swin3d_t")},
        {"pst_t": 32, "swin3d_t": 32},
    )
    args = SimpleNamespace(size=224, repeats=3, gemm_size=2048, train_rounds=1, train_steps=1)
    text = "\n".join(peers.markdown(args, inf, {"fp32": [90.0, 100.0], "bf16": [200.0]}, train, 2, "cmd"))
    assert "| **pst_t** | 32x224 |" in text and "| swin3d_t | 32x224 |" in text
    assert "fp32 90 / 100 GFLOP/s" in text
    assert "PST-T / swin3d_t training memory rise: 1.00x" in text


def test_profiles_rewrite_only_the_generated_block(tmp_path):
    path = tmp_path / "profiles.md"
    profiles.write_between_markers(path, ["first"])
    path.write_text(path.read_text().replace("# Profiles", "# Profiles\n\nhand-written reading"))
    profiles.write_between_markers(path, ["second"])
    text = path.read_text()
    assert "hand-written reading" in text and "second" in text and "first" not in text
    assert profiles.kind("aten::addmm") == "GEMM" and profiles.kind("aten::copy_") == "copies"


def _report(classes, confusion):
    return {"classes": classes, "confusion_matrix": confusion, "top1": 0.0}


def test_pair_accuracy_counts_exact_labels_of_both_directions():
    classes = ["move_left", "move_right", "rotate_cw", "rotate_ccw"]
    confusion = [[9, 1, 0, 0], [0, 10, 0, 0], [0, 0, 2, 8], [0, 0, 3, 7]]  # rows: true, columns: predicted
    pairs = temporal.pair_accuracy(_report(classes, confusion))
    assert set(pairs) == {"left/right", "cw/ccw"}  # pairs absent from the report are left out
    assert pairs["left/right"] == {"acc": 95.0, "first": 90.0, "second": 100.0}
    assert pairs["cw/ccw"] == {"acc": 45.0, "first": 20.0, "second": 70.0}


def test_rows_mark_runs_not_made_and_the_table_has_one_line_each():
    result = {"top1": 87.5, "minutes": 9.04, "resumed": True,
              "pairs": {"left/right": {"acc": 95.0, "first": 90.0, "second": 100.0}}}  # fmt: skip
    row = temporal.row_cells("pst_nano", "main", result)
    assert row == ["pst_nano", "main", "87.5", "95 (90/100)", "-", "-", "-", "9.0*"]
    missing = temporal.row_cells("sct_nano", "ablation", None)
    assert missing[:3] == ["sct_nano", temporal.ABLATIONS["sct_nano"][0], "not run"]
    table = temporal.format_table([row, missing]).splitlines()
    assert len(table) == 4 and all(line.count("|") == 9 for line in table)


def test_splice_keeps_prose_around_the_markers():
    doc = f"# T\nintro\n{temporal.BEGIN}\nold\n{temporal.END}\noutro\n"
    assert temporal.splice(doc, "new") == f"# T\nintro\n{temporal.BEGIN}\nnew\n{temporal.END}\noutro\n"
    assert temporal.splice("# T\n", "new") == f"# T\n\n{temporal.BEGIN}\nnew\n{temporal.END}\n"


def test_run_commands_use_the_checker_flags_and_the_ablation_switch(tmp_path):
    data = {"main": tmp_path / "main", "shuffled": tmp_path / "shuffled"}
    main = temporal.run_command("pst_nano", "main", data, tmp_path / "out")
    assert main[:3] == ["train", "--model", "pst_nano"] and "--set" not in main
    assert " ".join(temporal.TRAIN_FLAGS) == "--frames 16 --size 64 --sampling uniform:16 --epochs 15"
    assert str(data["shuffled"] / "train.csv") in temporal.run_command("pst_nano", "shuffled", data, tmp_path)
    ablation = temporal.run_command("dualformer_nano", "ablation", data, tmp_path)
    assert ablation[-2:] == ["--set", 'model_kwargs={"block_kinds": "LL"}']
    assert temporal.run_command("pst_nano", "ablation", data, tmp_path)[-1] == 'model_kwargs={"tps": null}'


def test_run_state_resumes_an_interrupted_run_and_skips_a_finished_one(tmp_path):
    out, record = tmp_path / "run", tmp_path / "run.json"
    assert temporal.run_state(record, out) == "fresh"
    out.mkdir()
    (out / "config.yaml").write_text("x: 1")
    assert temporal.run_state(record, out) == "restart"
    (out / "last.pth").write_bytes(b"")
    assert temporal.run_state(record, out) == "resume"
    record.write_text('{"returncode": 1}')
    assert temporal.run_state(record, out) == "resume"  # a failed attempt is not a result
    record.write_text('{"returncode": 0}')
    (out / "eval.json").write_text("{}")
    assert temporal.run_state(record, out) == "done"


def test_shuffle_permutation_is_fixed_per_video():
    a = temporal.shuffle_permutation("train/grow_0001.mp4", 32)
    assert sorted(a.tolist()) == list(range(32)) and a.tolist() != list(range(32))
    assert a.tolist() == temporal.shuffle_permutation("train/grow_0001.mp4", 32).tolist()
    assert a.tolist() != temporal.shuffle_permutation("train/grow_0002.mp4", 32).tolist()


def test_summary_table_has_every_family_and_marks_missing_runs():
    pairs = {"cw/ccw": {"acc": 90.0, "first": 100.0, "second": 80.0}}
    results = {("pst_nano", "main"): {"top1": 97.5, "pairs": pairs, "minutes": 14.1},
               ("pst_nano", "shuffled"): {"top1": 48.75, "pairs": {}, "minutes": 14.0}}  # fmt: skip
    lines = temporal.summary_table(results).splitlines()
    assert len(lines) == 2 + len(temporal.MODELS)
    assert lines[2] == "| pst_nano | 97.5 | 100/80 | 48.8 | not run | 14.1 |"
    assert lines[3] == "| dualformer_nano | not run |  | not run | not run |  |"


def test_replace_between_markers_keeps_the_prose_and_names_missing_markers():
    text = "# Doc\nintro\n<!-- a -->\nold\nrows\n<!-- b -->\noutro\n"
    assert replace_between_markers(text, "new", "<!-- a -->", "<!-- b -->") == (
        "# Doc\nintro\n<!-- a -->\nnew\n<!-- b -->\noutro\n"
    )
    with pytest.raises(ValueError, match="lacks the markers <!-- a -->"):
        replace_between_markers("# Doc\n<!-- b -->\n<!-- a -->\n", "new", "<!-- a -->", "<!-- b -->")  # end first
    assert replace_between_markers("# Doc\n", "new", "<!-- a -->", "<!-- b -->", append_missing=True) == (
        "# Doc\n\n<!-- a -->\nnew\n<!-- b -->\n"
    )
