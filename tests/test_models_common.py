"""What every registered model must do, run at each variant's smallest input (``cfg.min_input``)."""

import pytest
import torch

from kinetoscope import create_model, get_model_config, list_models
from kinetoscope.models import register_model

ALL = list_models()


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
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:1]) and all(torch.isfinite(g).all() for g in grads if g is not None)
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert len(unused) < len(grads), f"{name}: no parameter received a gradient"

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
