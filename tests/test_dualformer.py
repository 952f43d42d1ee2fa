import pytest
import torch
from torch import nn

from kinetoscope import create_model
from kinetoscope.models.dualformer import DualFormer, GlobalPyramidAttention, LocalWindowAttention
from kinetoscope.profiling import count_macs, count_params


def _dense(q, k, v):
    return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1) @ v


def test_gp_msa_matches_naive_pooling_and_dense_attention():
    torch.manual_seed(0)
    gp = GlobalPyramidAttention(16, 2, resolution=(8, 14, 14), fine=(4, 7, 7), coarse=(4, 2, 2)).eval()
    x = torch.randn(2, 8, 14, 14, 16)
    grid = x.permute(0, 4, 1, 2, 3)
    # explicit pooling: fine prior = depthwise conv with kernel = stride = (2, 2, 2)
    fine = torch.nn.functional.conv3d(grid, gp.fine_pool.weight, gp.fine_pool.bias, stride=(2, 2, 2), groups=16)
    c1, bn, _, c2 = gp.coarse_pool
    mid = torch.nn.functional.conv3d(grid, c1.weight, c1.bias, stride=(1, 7, 7), groups=16)
    mid = torch.relu(torch.nn.functional.batch_norm(mid, bn.running_mean, bn.running_var, bn.weight, bn.bias))
    coarse = torch.nn.functional.conv3d(mid, c2.weight, c2.bias, stride=c2.stride, groups=16)
    priors = torch.cat([fine.flatten(2), coarse.flatten(2)], dim=2).transpose(1, 2)  # (B, G, C)
    assert priors.shape[1] == 4 * 7 * 7 + 4 * 2 * 2
    priors = gp.norm(priors)
    tokens = x.reshape(2, -1, 16)
    a = gp.attn
    q = a.q(tokens).reshape(2, -1, 2, 8).transpose(1, 2)
    k, v = a.kv(priors).reshape(2, -1, 2, 2, 8).permute(2, 0, 3, 1, 4)
    expected = a.proj(_dense(q, k, v).transpose(1, 2).reshape(2, -1, 16)).view_as(x)
    torch.testing.assert_close(gp(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 14, 14), (5, 9, 11)])
def test_lw_msa_matches_a_per_window_loop(size):
    torch.manual_seed(0)
    lw = LocalWindowAttention(16, 2, window=(4, 7, 7)).eval()
    x = torch.randn(1, *size, 16)
    out = lw(x)
    T, H, W = size
    expected = torch.zeros_like(x)
    for t0 in range(0, T, 4):
        for h0 in range(0, H, 7):
            for w0 in range(0, W, 7):
                win = x[:, t0 : t0 + 4, h0 : h0 + 7, w0 : w0 + 7]  # only real tokens: padding is masked
                shape = win.shape
                tokens = win.reshape(1, -1, 16)
                q, k, v = lw.qkv(tokens).reshape(1, -1, 3, 2, 8).permute(2, 0, 3, 1, 4)
                o = lw.proj(_dense(q, k, v).transpose(1, 2).reshape(1, -1, 16))
                expected[:, t0 : t0 + 4, h0 : h0 + 7, w0 : w0 + 7] = o.view(shape)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# The released backbones measured with fvcore at 32x224 (docs: /work/shared/design/models.md, section 1.2 and
# "Released checkpoint layouts"): params without a head, GMACs per view. DualFormer-T maps one to one onto the
# release (306 tensors, same shapes), so its count is exact.
RELEASE = {"dualformer_t": (21_767_360, 60.09), "dualformer_s": (48.908e6, 158.69), "dualformer_b": (86.838e6, 267.96)}


@pytest.mark.parametrize("name", RELEASE)
def test_params_and_gmacs_equal_the_release(name):
    params, gmacs = RELEASE[name]
    with torch.device("meta"):
        model = create_model(name)
    ours_params = count_params(model, exclude_head=True)
    ours_gmacs, _ = count_macs(model, (1, 3, 32, 224, 224))
    assert abs(ours_params - params) <= 500, ours_params  # the release's figures are rounded to 1 k
    assert abs(ours_gmacs - gmacs) / gmacs < 0.01, ours_gmacs  # fvcore and FlopCounterMode differ on a few ops
    if name == "dualformer_t":
        assert ours_params == params


def test_released_structure_stage_priors():
    with torch.device("meta"):
        model = create_model("dualformer_t")
    gp = [blk.attn for stage in model.stages for blk in stage.blocks if isinstance(blk.attn, GlobalPyramidAttention)]
    per_stage = [[b.attn for b in s.blocks if isinstance(b.attn, GlobalPyramidAttention)][0] for s in model.stages]
    assert len(gp) == 1 + 1 + 5 + 2  # odd sub-blocks of depths (2, 2, 10, 4)
    assert [p.coarse_pool is not None for p in per_stage] == [True, True, False, False]
    assert per_stage[0].fine_kernel == (2, 8, 8) and per_stage[2].fine_kernel == (2, 2, 2)
    assert per_stage[3].fine_pool is None and per_stage[3].norm is None  # stage 4: full global attention


def test_ablation_switches_change_structure():
    def build(**kw):
        return DualFormer(num_classes=3, num_frames=8, img_size=64, embed_dims=(16, 32, 64, 128),
                          num_heads=(1, 2, 4, 8), depths=(2, 2, 2, 2), window=(4, 4, 4), **kw)  # fmt: skip

    def count(model, cls):
        return sum(isinstance(m, cls) for m in model.modules())

    assert count(build(block_kinds="LL"), GlobalPyramidAttention) == 0
    assert count(build(block_kinds="GG"), LocalWindowAttention) == 0
    avg = build(downsample="avgpool")
    assert not any(isinstance(m, nn.Conv3d) and m.groups > 1 and m.kernel_size != (3, 3, 3) for m in avg.modules())
    assert count_params(build(downsample="conv")) > count_params(build())
    assert count(build(peg=False), nn.Conv3d) < count(build(), nn.Conv3d)
    fine_only = build(pyramid=("fine",))
    assert all(m.coarse_pool is None for m in fine_only.modules() if isinstance(m, GlobalPyramidAttention))
    x = torch.randn(1, 3, 8, 64, 64)
    for model in (build(block_kinds="LL"), build(downsample="avgpool"), build(temporal_pool=(2, 1, 1))):
        assert model(x).shape == (1, 3)


def test_odd_sizes_work_and_2d_inflation_loads():
    model = create_model("dualformer_nano", num_classes=4, num_frames=6, img_size=52).eval()
    assert model(torch.randn(1, 3, 6, 52, 52)).shape == (1, 4)
    from kinetoscope import load_pretrained_2d

    dim = model.stages[0].patch_embed.proj.weight.shape[0]
    sd = {
        "stages.0.patch_embed.proj.weight": torch.randn(dim, 3, 4, 4),
        "stages.0.peg.proj.weight": torch.randn(dim, 1, 3, 3),
    }
    report = load_pretrained_2d(model, sd)
    assert set(report["loaded"]) == set(sd)
    w = model.stages[0].patch_embed.proj.weight
    torch.testing.assert_close(w.sum(2), sd["stages.0.patch_embed.proj.weight"])  # repeated / T keeps the sum


def test_inputs_smaller_than_the_prior_kernels_are_named():
    model = create_model("dualformer_nano", num_classes=3, num_frames=16, img_size=64).eval()
    # built for (8, 16, 16) token maps: stage 1 pools the fine prior with (2, 4, 4) and the coarse one with (1, 7, 7)
    # then (2, 1, 1), so it needs maps of at least (2, 7, 7); stage 2, at half the size, needs (2, 7, 7) too:
    # T >= 3 (ceil(T / 2) >= 2) and H >= 49 (ceil(ceil(H / 4) / 2) >= 7)
    with pytest.raises(ValueError, match=r"at least 3 frames of 49x49 pixels, got \(4, 48, 48\)"):
        model(torch.randn(1, 3, 4, 48, 48))
    with pytest.raises(ValueError, match="at least 3 frames"):
        model(torch.randn(1, 3, 2, 64, 64))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 3, 49, 49)).shape == (1, 3)  # the smallest clip the message names
        assert model(torch.randn(1, 3, 20, 70, 90)).shape == (1, 3)  # larger inputs give more priors
