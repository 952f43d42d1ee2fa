import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from kinetoscope import create_model, load_pretrained_2d
from kinetoscope.models.cstransformer import CrossStageBlock, CSTransformer
from kinetoscope.profiling import count_macs


def _tiny(**kw) -> CSTransformer:
    args = dict(num_classes=5, num_frames=3, img_size=32, embed_dim=24, num_heads=2, spatial_depth=3, temporal_depth=3)
    args.update(kw)
    return CSTransformer(**args)


def _randomise(model: CSTransformer) -> None:
    """Give every zero-initialised parameter (tokens, embeddings, alpha, beta) a non-trivial value."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "alpha" in name:
                p.uniform_(-0.8, 0.8)
            elif "beta" in name:
                p.uniform_(0.5, 2.0)
            elif name in ("cls_token", "pos_embed", "time_embed") or "qkv.weight" in name:
                p.normal_(std=0.5)  # large logits, so that CSSA visibly changes the attention


# ------------------------------------------------------------------------------- naive reference
def _naive_attention(blk: CrossStageBlock, x: torch.Tensor, prev, mode: str):
    """One sequence ``(N, C)``: softmax(A_i + alpha_i A_{i-1}) V written out; returns (out, logits passed)."""
    h = blk.attn.num_heads
    N, C = x.shape
    d = C // h
    q, k, v = blk.attn.qkv(x).reshape(N, 3, h, d).permute(1, 2, 0, 3)  # each (h, N, d)
    A = q @ k.transpose(-1, -2) / math.sqrt(d)  # (h, N, N)
    S = A if prev is None or blk.alpha is None else A + blk.alpha.reshape(-1, 1, 1) * prev
    out = (S.softmax(-1) @ v).transpose(0, 1).reshape(N, C)
    return blk.attn.proj(out), (S if mode == "mixed" else A)


def _naive_block(blk, x, prev, mode):
    y, logits = _naive_attention(blk, blk.norm1(x), prev, mode)
    x = x + y
    return x + blk.mlp(blk.norm2(x)), logits


def _naive_logits(model: CSTransformer, clip: torch.Tensor, mode: str) -> torch.Tensor:
    """Eq. 1-9 for one clip ``(3, T, H, W)`` with loops over frames, positions and blocks."""
    T = clip.shape[1]
    w = model.patch_embed.proj.weight[:, :, 0]  # (C, 3, 16, 16)
    frames = []
    for t in range(T):
        v = F.conv2d(clip[:, t][None], w, model.patch_embed.proj.bias, stride=16)[0].flatten(1).T  # (P, C)
        v = v + model.pos_embed[0, 1:] + model.time_embed[0, t, 0]  # Eq. 3
        cls = model.cls_token[0] + model.pos_embed[0, :1]  # Eq. 2
        frames.append(torch.cat([cls, v]))  # Eq. 4: (1+P, C)
    tokens = torch.stack(frames)  # (T, N, C)
    outputs = []  # V_i of every block in (T, N, C)
    prevs = [None] * T
    for blk in model.spatial_blocks:
        res = [_naive_block(blk, tokens[t], prevs[t], mode) for t in range(T)]
        tokens, prevs = torch.stack([r[0] for r in res]), [r[1] for r in res]
        outputs.append(tokens)
    N = tokens.shape[1]
    prevs = [None] * N  # shapes differ: the first TTB attends plainly
    for blk in model.temporal_blocks:
        res = [_naive_block(blk, tokens[:, n], prevs[n], mode) for n in range(N)]
        tokens, prevs = torch.stack([r[0] for r in res], dim=1), [r[1] for r in res]
        outputs.append(tokens)
    Y = outputs[-1] + sum(model.fam.norms[i](model.fam.beta[i] * outputs[i]) for i in range(len(outputs) - 1))
    return model.head(model.norm(Y[:, 0]).mean(0))


@pytest.mark.parametrize("alpha_mode,mode", [("scalar", "raw"), ("head", "mixed")])
def test_model_equals_naive_reference(alpha_mode, mode):
    model = _tiny(alpha_mode=alpha_mode, cssa_logits=mode).double().eval()
    _randomise(model)
    clip = torch.randn(2, 3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        got = model(clip)
        expected = torch.stack([_naive_logits(model, c, mode) for c in clip])
        plain = _tiny(alpha_mode=alpha_mode, cssa_logits=mode, cross_stage=False).double().eval()
        plain.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    assert (plain(clip) - got).abs().max() > 1e-3  # CSSA with alpha != 0 really changes the output


def test_cssa_block_alpha_zero_is_plain_attention_and_alpha_mixes_logits():
    torch.manual_seed(0)
    blk = CrossStageBlock(32, 4, cross_stage=True, pass_logits=True).double().eval()
    plain = CrossStageBlock(32, 4, cross_stage=False, pass_logits=False).double().eval()
    plain.load_state_dict(blk.state_dict(), strict=False)
    x = torch.randn(3, 7, 32, dtype=torch.float64)
    prev = torch.randn(3, 4, 7, 7, dtype=torch.float64) * 3
    with torch.no_grad():
        assert blk.alpha.shape == (1,) and blk.alpha.item() == 0.0  # documented default: scalar, 0
        out0, logits = blk(x, prev)
        torch.testing.assert_close(out0, plain(x)[0], rtol=1e-12, atol=1e-12)
        blk.alpha.fill_(0.7)
        out, logits = blk(x, prev)
        naive = [_naive_block(blk, x[r], prev[r], "raw") for r in range(3)]
    torch.testing.assert_close(out, torch.stack([n[0] for n in naive]), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logits, torch.stack([n[1] for n in naive]), rtol=1e-10, atol=1e-10)
    assert (out - out0).abs().max() > 1e-3


def test_cssa_structure_and_every_parameter_gets_a_gradient():
    model = create_model("cst_nano", num_classes=4, num_frames=4, img_size=32)
    alphas = [n for n, _ in model.named_parameters() if "alpha" in n]
    # no alpha in the first STB / first TTB (no logits of the same shape to mix in)
    assert alphas == [f"spatial_blocks.{i}.alpha" for i in (1, 2, 3)] + ["temporal_blocks.1.alpha"]
    assert len(model.fam.norms) == 4 + 2 - 1 and model.fam.beta.shape == (5,)
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # DDP-safe: nothing unused
    assert model.spatial_blocks[1].alpha.grad.abs().item() > 0  # alpha = 0 still learns
    baseline = create_model("cst_v2_baseline", num_frames=2, img_size=32)
    assert baseline.fam is None and not any("alpha" in n for n, _ in baseline.named_parameters())


def test_from_scratch_nano_sees_frame_order_at_initialisation():
    """With ``P_t = 0`` (the paper variants' start, so that a loaded image ViT is reproduced) every frame's
    class token is the same, TTBs are permutation-equivariant and the head averages over frames: the
    initialised model is exactly blind to frame order (reversing the clip changes the logits by ~1e-7), and
    trained from scratch it must find the order through ``P_t``'s gradient alone. ``cst_nano`` starts
    ``P_t`` at trunc-normal(0.5) (``time_embed_std``)."""
    x = torch.randn(2, 3, 4, 32, 32)
    torch.manual_seed(0)
    blind = _tiny(num_frames=4).eval()
    torch.manual_seed(0)
    nano = create_model("cst_nano", num_classes=5, num_frames=4, img_size=32).eval()
    with torch.no_grad():
        assert (blind(x) - blind(x.flip(2))).abs().max() < 1e-5
        assert (nano(x) - nano(x.flip(2))).abs().max() > 1e-3
    assert nano.time_embed.std() > 0.3 and blind.time_embed.abs().max() == 0


def test_tubelet_embedding_reads_frame_pairs_and_reduces_to_frames():
    """``tubelet_size=2`` embeds ``2 x 16 x 16`` tubelets (ViViT's tubelet embedding): with the second
    frame's kernel at 0 it is the paper's per-frame embedding of the even frames."""
    torch.manual_seed(0)
    pairs, single = _tiny(num_frames=4, tubelet_size=2).eval(), _tiny(num_frames=2).eval()
    _randomise(pairs)
    state = pairs.state_dict()
    kernel = state["patch_embed.proj.weight"]  # (C, 3, 2, 16, 16)
    state["patch_embed.proj.weight"] = torch.cat([kernel[:, :, :1], torch.zeros_like(kernel[:, :, 1:])], dim=2)
    pairs.load_state_dict(state)
    single.load_state_dict({**state, "patch_embed.proj.weight": kernel[:, :, :1]})
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pairs(x), single(x[:, :, ::2]))
    assert pairs.time_embed.shape[1] == 2 and pairs.frames_per_image == 2
    with pytest.raises(ValueError, match="tubelet size 2"):
        pairs(torch.randn(1, 3, 5, 32, 32))


# --------------------------------------------------------------------------------- timm equivalence
def test_spatial_stack_equals_timm_vit_base():
    """Baseline (CSSA and FAM off), one 224 frame: the STBs are ViT-B/16 given the same weights."""
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=400).eval()
    model = create_model("cst_v2_baseline", num_frames=1, temporal_depth=0).eval()
    report = load_pretrained_2d(model, vit.state_dict())
    assert report["missing"] == ["time_embed"] and report["unexpected"] == []
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(img[:, :, None]), vit(img), rtol=1e-4, atol=1e-4)
        # the features (the last STB's tokens after the head's LayerNorm) are the ViT's normalised tokens
        feats = model.forward_features(img[:, :, None])
        assert feats.shape == (1, 1, 1 + 196, 768)
        torch.testing.assert_close(feats[:, 0], vit.forward_features(img), rtol=1e-4, atol=1e-4)


def _small_vit(depth=3):
    return VisionTransformer(img_size=64, patch_size=16, embed_dim=48, depth=depth, num_heads=4, num_classes=6).eval()


def test_loaded_model_starts_as_the_image_vit():
    """alpha = 0 and FAM norms at 0 (``fam_norm_init=0``): the loaded full model is the image ViT."""
    vit = _small_vit()
    model = CSTransformer(
        num_classes=6, num_frames=2, img_size=64, embed_dim=48, num_heads=4, spatial_depth=3, temporal_depth=0,
        fam_norm_init=0.0,
    ).eval()  # fmt: skip
    load_pretrained_2d(model, vit.state_dict())
    img = torch.randn(2, 3, 64, 64)
    clip = img[:, :, None].expand(-1, -1, 2, -1, -1)  # a static clip: every frame gives the image's logits
    with torch.no_grad():
        torch.testing.assert_close(model(clip), vit(img), rtol=1e-4, atol=1e-5)


def test_load_pretrained_2d_maps_and_resizes():
    vit = _small_vit(depth=3)
    model = CSTransformer(
        num_classes=10, num_frames=4, img_size=96, embed_dim=48, num_heads=4, spatial_depth=2, temporal_depth=2
    )
    report = load_pretrained_2d(model, vit.state_dict())
    assert all(k.startswith("spatial_blocks.2.") for k in report["unexpected"]) and report["unexpected"]
    assert {k.split(".")[0] for k in report["missing"]} == {
        "temporal_blocks",
        "time_embed",
        "fam",
        "spatial_blocks",
        "head",
    }
    assert all(k.endswith("alpha") for k in report["missing"] if k.startswith("spatial_blocks"))
    torch.testing.assert_close(model.spatial_blocks[1].attn.qkv.weight, vit.blocks[1].attn.qkv.weight)
    assert model.pos_embed.shape == (1, 1 + 36, 48)  # 4x4 grid resampled to 6x6
    torch.testing.assert_close(model.pos_embed[:, 0], vit.pos_embed[:, 0])


# --------------------------------------------------------------------------------------- inputs
def test_other_frame_counts_and_sizes_resample_the_position_embeddings():
    model = _tiny(img_size=32, num_frames=4).eval()
    _randomise(model)
    other = _tiny(img_size=64, num_frames=6).eval()
    state = model.state_dict()
    state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], F.interpolate(
        state["pos_embed"][:, 1:].reshape(1, 2, 2, 24).permute(0, 3, 1, 2), size=(4, 4), mode="bicubic",
    ).permute(0, 2, 3, 1).reshape(1, 16, 24)], dim=1)  # fmt: skip
    state["time_embed"] = F.interpolate(state["time_embed"][:, :, 0].transpose(1, 2), size=6, mode="linear")
    state["time_embed"] = state["time_embed"].transpose(1, 2)[:, :, None]
    other.load_state_dict(state)
    clip = torch.randn(1, 3, 6, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(clip), other(clip), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by the tubelet size 16"):
        model(torch.randn(1, 3, 4, 40, 40))


def test_position_embedding_ablation_switches():
    model = _tiny(spatial_pos_embed=False, temporal_pos_embed=False)
    assert model.pos_embed is None and model.time_embed is None
    assert model(torch.randn(1, 3, 2, 32, 32)).shape == (1, 5)


# ---------------------------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize(
    "name,kwargs,paper_gflops",
    [
        ("cst_v2", {"temporal_mlp_ratio": 2.0}, 359.9),  # Table 1d (the variants: tests/test_models_common.py)
        ("cst_v2", {"temporal_mlp_ratio": 4.0}, 400.7),
    ],
)
def test_ablation_gflops_match_the_paper(name, kwargs, paper_gflops):
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    gmacs, _ = count_macs(model, (1, 3, 8, 224, 224))
    assert abs(2 * gmacs - paper_gflops) / paper_gflops < 0.05, (name, kwargs, 2 * gmacs)


def test_cls_moments_head_reads_class_tokens_and_patch_moments_on_the_right_grid():
    """``global_pool="cls_moments"``: the class tokens' average, then the patch tokens' average and their
    averages weighted by column and by row (cell centres, -1 left/top to 1 right/bottom), from a naive loop
    over the tokens; a 2 x 3 grid (32 x 48 pixels) catches a swapped height and width."""
    torch.manual_seed(0)
    model = _tiny(num_frames=2, patch_size=16, global_pool="cls_moments").eval()
    assert model.head.in_features == 4 * 24
    with torch.no_grad():
        y = model.forward_features(torch.randn(2, 3, 2, 32, 48))  # (B, T, 1 + 2*3, C)
        pooled = model.forward_head(y, pre_logits=True)
    B, T, N, C = y.shape
    h, w = 2, 3
    want = torch.zeros(B, 4 * C)
    for b in range(B):
        want[b, :C] = y[b, :, 0].mean(0)
        for t in range(T):
            for i in range(h):
                for j in range(w):
                    tok = y[b, t, 1 + i * w + j] / (T * h * w)
                    col, row = (j + 0.5) * 2 / w - 1, (i + 0.5) * 2 / h - 1
                    want[b, C : 2 * C] += tok
                    want[b, 2 * C : 3 * C] += col * tok
                    want[b, 3 * C :] += row * tok
    torch.testing.assert_close(pooled, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="do not fill the last forward's 2x3 grid"):
        model.pool(y[:, :, :5])
    with pytest.raises(ValueError, match="global_pool must be 'cls' or 'cls_moments'"):
        _tiny(global_pool="avg")
    # both readings are symmetric in time: with P_t = 0 the initialised model is still blind to frame order
    blind = _tiny(num_frames=4, global_pool="cls_moments").eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert (blind(x) - blind(x.flip(2))).abs().max() < 1e-5
