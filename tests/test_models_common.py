"""What every registered model must do, run at each variant's smallest input (``cfg.min_input``)."""

import pytest
import torch
from timm.models._manipulate import group_parameters
from timm.optim import param_groups_layer_decay

from kinetoscope import create_model, get_model_config, list_models
from kinetoscope.models import register_model
from kinetoscope.profiling import paper_comparison

ALL = list_models()
NANOS = list_models("*_nano")


def _input(name: str, batch: int = 2) -> torch.Tensor:
    frames, size = get_model_config(name).min_input
    return torch.randn(batch, 3, frames, size, size)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_features_and_classifier(name):
    cfg = get_model_config(name)
    frames, size = cfg.min_input
    model = create_model(name, num_classes=7, num_frames=frames, img_size=size)
    x = _input(name)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    model.eval()
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        assert feats.shape == (2, model.num_features)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), feats)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
    assert isinstance(model.no_weight_decay(), set)

    headless = create_model(name, num_classes=0, num_frames=frames, img_size=size).eval()
    with torch.no_grad():
        assert headless(x).shape == (2, headless.num_features)


@pytest.mark.parametrize("name", ALL)
def test_every_parameter_gets_a_gradient(name):
    """No dead branch: every parameter moves the loss (also what DDP without find_unused_parameters needs).
    Train mode, no stochastic depth or dropout (a dropped branch has no gradient in that step), 64 px so that
    every stage has more than one token (SCT's last LSH layer sees a single token at 32 px)."""
    frames, size = get_model_config(name).min_input
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, num_frames=frames, img_size=max(size, 64), drop_path_rate=0.0).train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    out = model(torch.randn(2, 3, frames, max(size, 64), max(size, 64)))
    (out * torch.randn_like(out)).sum().backward()  # random class weights: no sum that could cancel
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == [], f"{name}: parameters without a gradient (a dead branch): {dead}"


@pytest.mark.parametrize("name", ALL)
def test_grad_checkpointing_gives_the_same_gradients(name):
    frames, size = get_model_config(name).min_input
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, num_frames=frames, img_size=size, drop_path_rate=0.0)
    model.train()
    for m in model.modules():  # dropout would draw different masks in the recomputation
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x = _input(name, batch=1)
    torch.manual_seed(1)  # both passes draw the same random numbers (SCT's LSH rotations in training)
    model(x).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        if n in ref:
            torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-5, msg=f"{name}: {n}")


@pytest.mark.parametrize("name", ALL)
def test_output_depends_on_frame_order(name):
    """Necessary for temporal modelling (the synthetic direction-of-time benchmark is the real proof)."""
    frames, size = get_model_config(name).min_input
    model = create_model(name, num_classes=5, num_frames=frames, img_size=size).eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised embeddings would hide what training can learn
            if not p.any():
                p.normal_(std=0.02)
        x = _input(name, batch=1)
        assert (model(x) - model(x.flip(2))).abs().max() > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models("*_nano"))
def test_nano_memorises_eight_clips(name, fit_eight_clips):
    """A model that cannot fit 8 clips from scratch has a dead path (SCT's 0.02-init embedding had one)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, num_frames=8, img_size=64)
    losses = fit_eight_clips(model, frames=8, lr=3e-4)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", ALL)
def test_wrong_layout_is_named(name):
    frames, size = get_model_config(name).min_input
    model = create_model(name, num_classes=3, num_frames=frames, img_size=size)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        model(torch.randn(1, frames, 3, size, size))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        model(torch.randn(3, frames, size, size))


@pytest.mark.parametrize("name", ALL)
def test_every_variant_carries_its_config(name):
    cfg = get_model_config(name)
    assert cfg.num_frames > 0 and cfg.img_size > 0 and len(cfg.mean) == 3 and len(cfg.std) == 3
    clips, crops = (int(v) for v in cfg.test_views.split("x"))
    assert clips >= 1 and crops in (1, 3)
    if not name.endswith("_nano") and cfg.paper is not None:
        assert cfg.paper.gflops is not None and cfg.paper.citation


def test_every_family_has_a_nano():
    families = {n.split("_")[0] for n in ALL if n != "deit_s_tps"}
    nanos = {n.split("_")[0] for n in list_models("*_nano")}
    assert families <= nanos, families - nanos


def test_registry_rejects_duplicates_and_names_unknown_models():
    from kinetoscope.models import ModelConfig

    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelConfig(name="pst_nano", num_frames=8, img_size=64))(lambda **kw: None)
    with pytest.raises(ValueError, match="unknown model 'pst_tiny'.*pst_nano"):
        create_model("pst_tiny")
    assert list_models("pst_*") == sorted(n for n in ALL if n.startswith("pst_"))


@pytest.mark.slow
def test_torch_compile_matches_eager():
    model = create_model("pst_nano", num_classes=4).eval()
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NANOS + ["deit_s_tps"])
def test_forward_intermediates_contract(name):
    frames, size = get_model_config(name).min_input
    kwargs = dict(depth=3) if name == "deit_s_tps" else {}
    model = create_model(name, num_classes=3, num_frames=frames, img_size=size, **kwargs).eval()
    x = torch.randn(2, 3, frames, size, size)
    n = model.num_intermediates
    features, grids = model.forward_intermediates(x)
    torch.testing.assert_close(features, model.forward_features(x))
    assert len(grids) == n and all(g.dim() == 5 and g.shape[:2] == (2, g.shape[1]) for g in grids)
    # the last grid is the features' patch tokens: the map itself (PST, DualFormer), or the tokens after the
    # class token (DeiT-TPS, STAT, SCT; CSTransformer's features are FAM's sum, of the same shape)
    last = model.forward_intermediates(x, indices=1, norm=True, output_fmt="NTHWC", intermediates_only=True)[0]
    patches = features if features.dim() == 5 else features[:, :, features.shape[2] - last.shape[2] * last.shape[3] :]
    assert patches.numel() == last.numel() and last.shape[-1] == features.shape[-1]
    if getattr(model, "fam", None) is None:
        torch.testing.assert_close(patches.reshape(last.shape), last)
    # the gradient of a class score reaches the last grid the head still reads (Grad-CAM; module docstring
    # of models/_base.py): the last one (also where the head averages every token: stat_nano's avgpool
    # global embedding, cst_nano, whose head reads the patch tokens' moments, and sct_nano, whose clip encoder
    # reads the tokens' mean), the one before it where the head reads class tokens, and for a CSTransformer
    # reading class tokens alone (its temporal blocks keep positions apart) the input of the last spatial block
    logits = model.forward_head(features)
    reach = [bool(torch.autograd.grad(logits[:, 0].sum(), g, retain_graph=True)[0].any()) for g in grids]
    reads_tokens = getattr(model, "global_embed", None) == "avgpool"
    reads_tokens |= getattr(model, "frame_feature", None) == "cls+tokens"
    if features.dim() == 5 or model.global_pool == "cls_moments" or reads_tokens:
        last_reached = n - 1
    elif hasattr(model, "spatial_blocks"):
        last_reached = len(model.spatial_blocks) - 2
    else:
        last_reached = n - 2
    assert reach[last_reached] and not any(reach[last_reached + 1 :]), reach
    # timm's selections: the last n, a list with negatives, stop early
    head = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
    torch.testing.assert_close(head[1], grids[-1])
    early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(early[0], grids[0])
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[n])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NCHW")
    with pytest.raises(ValueError, match="intermediates_only"):
        model.forward_intermediates(x, stop_early=True)


@pytest.mark.parametrize("name", ALL)
def test_group_matcher_gives_timm_layer_decay(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=5)
    layer_of = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    names = [n for n, _ in model.named_parameters()]
    body = [n for n in names if not n.startswith("head.")]
    assert set(body) <= set(layer_of), f"parameters in no group: {sorted(set(body) - set(layer_of))[:5]}"
    ids = [layer_of[n] for n in body]  # parameters are created stem first, head last
    first_block = min(layer_of[n] for n in body if "blocks" in n or "layers" in n or "stages" in n)
    assert min(ids) == 0 and first_block >= 0 and max(ids) >= model.num_intermediates
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5)
    scales = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert len(scales) == len(names)  # every parameter in exactly one group
    params = dict(model.named_parameters())
    assert scales[id(params[body[0]])] < scales[id(params["head.weight"])] == 1.0
    coarse = group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    assert max(coarse.values()) <= max(layer_of.values())


KEYWORDS = ("pos_embed", "cls_token", "relative_position_bias_table", "token", "time_embed", "alpha", "beta")


@pytest.mark.parametrize("name", ALL)
def test_no_weight_decay_names_are_declared_explicitly(name):
    """Every embedding, token, bias table and mixing ratio, and nothing else: the reference is the keyword
    rule the base class used before families declared their names."""
    with torch.device("meta"):
        model = create_model(name)
    expected = {n for n, _ in model.named_parameters() if any(k in n for k in KEYWORDS)}
    assert model.no_weight_decay() == expected
    assert expected or name.startswith("dualformer")  # DualFormer has no embedding: its positions come from convs


PAPER_VARIANTS = [n for n in ALL if get_model_config(n).paper is not None]


@pytest.mark.parametrize("name", PAPER_VARIANTS)
def test_variant_matches_its_paper_reference(name):
    """Params (with the head size the paper counted, or the backbone alone) and GFLOPs in the paper's own
    convention, within the tolerance the family documents (PaperReference.tolerance)."""
    ref = get_model_config(name).paper
    row = paper_comparison(name)
    assert row["flop_convention"] == ref.flop_convention
    if ref.params_m is not None:
        assert abs(row["params_m"] / ref.params_m - 1) <= ref.tolerance, row
    assert ref.gflops is not None and abs(row["gflops"] / ref.gflops - 1) <= ref.tolerance, row


def test_every_variant_with_paper_numbers_is_checked():
    assert {"pst_b_dagger", "pst_t_dagger", "deit_s_tps", "dualformer_t", "sct_s", "stat_64", "cst_v2"} <= set(
        PAPER_VARIANTS
    )
    assert all(get_model_config(n).paper.tolerance <= 0.05 for n in PAPER_VARIANTS)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_classes=-1), "num_classes must be an integer >= 0"),
        (dict(num_classes=2.5), "num_classes must be an integer >= 0"),
        (dict(num_classes=True), "num_classes must be an integer >= 0"),
        (dict(num_frames=0), "num_frames must be an integer >= 1"),
        (dict(img_size=-32), "img_size must be an integer >= 1"),
        (dict(img_size="64"), "img_size must be an integer >= 1"),
    ],
)
def test_create_model_validates_its_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("pst_nano", **kwargs)


SWEEP_MODELS = NANOS + ["deit_s_tps", "pst_t_dagger", "dualformer_t"]


@pytest.mark.parametrize("name", SWEEP_MODELS)
def test_inputs_a_model_cannot_take_raise_a_value_error(name):
    """Odd frame counts and sizes on the meta device: every input runs, or is refused with a ValueError that
    names what works (no RuntimeError from deep inside a layer)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=3).eval()
    ran = 0
    for frames in (1, 3, 7, 16):
        for size in (8, 33, 48, 112):
            try:
                with torch.no_grad():
                    out = model(torch.empty(1, 3, frames, size, size, device="meta"))
                assert out.shape == (1, 3)
                ran += 1
            except ValueError as err:
                assert any(w in str(err) for w in ("multiple of", "at least", "divisible")), str(err)
    assert ran > 0


def test_moment_pool_is_the_average_and_the_coordinate_weighted_averages():
    from kinetoscope.models._base import moment_pool

    x = torch.randn(2, 3, 4, 5, 6)  # (B, T, H, W, C)
    expected = torch.zeros(2, 18)
    for b in range(2):
        for i in range(4):
            for j in range(5):
                f = x[b, :, i, j].mean(0)  # the cell's average over time
                col, row = (j + 0.5) / 5 * 2 - 1, (i + 0.5) / 4 * 2 - 1  # cell centres in [-1, 1]
                expected[b] += torch.cat([f, col * f, row * f]) / 20
    torch.testing.assert_close(moment_pool(x), expected)


def _turning_field(clockwise: bool, size: int = 8) -> torch.Tensor:
    """``(1, 1, size, size, 2)`` features holding the velocity ``(v_x, v_y)`` of a turn about the centre
    (image axes: y points down, so clockwise on screen is ``v = (-y, x)``)."""
    c = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    v = torch.stack([-y, x], dim=-1) if clockwise else torch.stack([y, -x], dim=-1)
    return v[None, None]


def test_moment_pooling_tells_a_turn_from_the_opposite_turn_where_averaging_cannot():
    from kinetoscope.models._base import moment_pool

    cw, ccw = _turning_field(True), _turning_field(False)
    torch.testing.assert_close(cw.mean(dim=(1, 2, 3)), ccw.mean(dim=(1, 2, 3)))  # both average to no motion
    # pooled: [mean v_x, mean v_y, mean x v_x, mean x v_y, mean y v_x, mean y v_y]; the curl x v_y - y v_x
    # is a linear read-out of it, positive for the clockwise turn
    pooled_cw, pooled_ccw = moment_pool(cw)[0], moment_pool(ccw)[0]
    assert pooled_cw[3] - pooled_cw[4] > 0 > pooled_ccw[3] - pooled_ccw[4]


@pytest.mark.parametrize("name", ["pst_nano", "dualformer_nano"])
def test_windowed_nanos_pool_keeps_where_features_are(name):
    # pst_nano and dualformer_nano could not tell clockwise from counter-clockwise on synthetic data while
    # their heads averaged the grid: a feature map and its half-turn about the centre pooled alike
    model = create_model(name, num_classes=2)
    grid = torch.randn(1, 2, 4, 4, model.num_features // 3)
    assert not torch.allclose(model.pool(grid), model.pool(grid.flip(2, 3)))
    assert get_model_config(name).recipe  # the nano carries its training settings
