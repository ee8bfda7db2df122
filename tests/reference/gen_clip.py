"""Writes CLIP image-tower references and a timm-layout ViT without spdlab metadata (plain PyTorch, no open_clip,
no transformers): the forward passes below follow OpenAI's clip/model.py VisionTransformer and Hugging Face's
CLIPVisionTransformer as those libraries define them.

  gen_clip.py -> next to this script:
    clip_openai.safetensors   a tower under OpenAI / open_clip names (visual.*), plus three text-tower tensors
                              that a loader must skip
    clip_hf.safetensors       the same weights under Hugging Face CLIPVisionModelWithProjection names
                              (vision_model.*, visual_projection), plus position_ids and one text tensor
    clip_ref.safetensors      input, a linear head, and the logits with QuickGELU and with exact GELU
    vit_nometa.safetensors    a timm-layout ViT with only {"format": "pt"} as metadata (as timm writes)
    vit_nometa_ref.safetensors  its input and logits; the metadata holds the config it was made with

Weights are float32; references are computed in float64 from those float32 values, then stored as float32.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402

CLIP = dict(width=64, layers=2, heads=2, mlp=128, patch=8, image=32, channels=3, output_dim=32, classes=5)
NOMETA = dict(img_size=32, in_chans=3, patch_size=8, embed_dim=64, depth=1, num_heads=1, mlp_hidden=192,
              num_classes=7)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def make_clip_openai(gen):
    c = CLIP
    D, L, Hm, P, C, E = c["width"], c["layers"], c["mlp"], c["patch"], c["channels"], c["output_dim"]
    n = (c["image"] // P) ** 2
    w = {}

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float64).mul(std).float()

    def norm(name):
        w[f"{name}.weight"] = 1 + normal((D,), 0.2)
        w[f"{name}.bias"] = normal((D,), 0.2)

    w["visual.conv1.weight"] = normal((D, C, P, P), 1 / math.sqrt(C * P * P))
    w["visual.class_embedding"] = normal((D,), 0.5)
    w["visual.positional_embedding"] = normal((n + 1, D), 0.5)
    norm("visual.ln_pre")
    for i in range(L):
        b = f"visual.transformer.resblocks.{i}"
        norm(f"{b}.ln_1")
        w[f"{b}.attn.in_proj_weight"] = normal((3 * D, D), 1 / math.sqrt(D))
        w[f"{b}.attn.in_proj_bias"] = normal((3 * D,), 0.1)
        w[f"{b}.attn.out_proj.weight"] = normal((D, D), 1 / math.sqrt(D))
        w[f"{b}.attn.out_proj.bias"] = normal((D,), 0.1)
        norm(f"{b}.ln_2")
        w[f"{b}.mlp.c_fc.weight"] = normal((Hm, D), 1 / math.sqrt(D))
        w[f"{b}.mlp.c_fc.bias"] = normal((Hm,), 0.1)
        w[f"{b}.mlp.c_proj.weight"] = normal((D, Hm), 1 / math.sqrt(Hm))
        w[f"{b}.mlp.c_proj.bias"] = normal((D,), 0.1)
    norm("visual.ln_post")
    w["visual.proj"] = normal((D, E), 1 / math.sqrt(D))  # used as x @ proj
    return w


def openai_forward(w, x, act):
    """OpenAI CLIP VisionTransformer.forward (LayerNorm eps 1e-5), then x @ proj."""
    c = CLIP
    D, Hh = c["width"], c["heads"]
    x = F.conv2d(x, w["visual.conv1.weight"], None, stride=c["patch"])
    x = x.flatten(2).transpose(1, 2)
    B = x.shape[0]
    x = torch.cat([w["visual.class_embedding"].expand(B, 1, D), x], dim=1) + w["visual.positional_embedding"]
    x = F.layer_norm(x, (D,), w["visual.ln_pre.weight"], w["visual.ln_pre.bias"], 1e-5)
    T = x.shape[1]
    for i in range(c["layers"]):
        p = f"visual.transformer.resblocks.{i}."
        h = F.layer_norm(x, (D,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], 1e-5)
        # nn.MultiheadAttention with in_proj_weight = [W_q; W_k; W_v]
        q, k, v = F.linear(h, w[p + "attn.in_proj_weight"], w[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        split = lambda t: t.reshape(B, T, Hh, D // Hh).transpose(1, 2)  # noqa: E731
        a = torch.softmax(split(q) @ split(k).transpose(-2, -1) / math.sqrt(D // Hh), dim=-1) @ split(v)
        x = x + F.linear(a.transpose(1, 2).reshape(B, T, D), w[p + "attn.out_proj.weight"], w[p + "attn.out_proj.bias"])
        h = F.layer_norm(x, (D,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], 1e-5)
        h = act(F.linear(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]))
        x = x + F.linear(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x[:, 0, :], (D,), w["visual.ln_post.weight"], w["visual.ln_post.bias"], 1e-5)
    return x @ w["visual.proj"]


def to_hf(w):
    """The same weights under Hugging Face's CLIPVisionModelWithProjection names."""
    c = CLIP
    D = c["width"]
    n = (c["image"] // c["patch"]) ** 2
    h = {
        "vision_model.embeddings.patch_embedding.weight": w["visual.conv1.weight"],
        "vision_model.embeddings.class_embedding": w["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": w["visual.positional_embedding"],
        "vision_model.embeddings.position_ids": torch.arange(n + 1).reshape(1, -1),
        "vision_model.pre_layrnorm.weight": w["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": w["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": w["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": w["visual.ln_post.bias"],
        "visual_projection.weight": w["visual.proj"].t().contiguous(),  # nn.Linear(D, E, bias=False)
    }
    for i in range(c["layers"]):
        o, p = f"visual.transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for part, j in (("q", 0), ("k", 1), ("v", 2)):
            h[p + f"self_attn.{part}_proj.weight"] = w[o + "attn.in_proj_weight"][j * D:(j + 1) * D].clone()
            h[p + f"self_attn.{part}_proj.bias"] = w[o + "attn.in_proj_bias"][j * D:(j + 1) * D].clone()
        for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                     ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            h[p + b + ".weight"] = w[o + a + ".weight"]
            h[p + b + ".bias"] = w[o + a + ".bias"]
    return h


def hf_forward(h, x, act):
    """Hugging Face CLIPVisionTransformer (separate q, k, v; q scaled before the product), pooled, projected."""
    c = CLIP
    D, Hh = c["width"], c["heads"]
    e = F.conv2d(x, h["vision_model.embeddings.patch_embedding.weight"], None, stride=c["patch"])
    e = e.flatten(2).transpose(1, 2)
    B = e.shape[0]
    cls = h["vision_model.embeddings.class_embedding"].expand(B, 1, -1)
    x = torch.cat([cls, e], dim=1) + h["vision_model.embeddings.position_embedding.weight"][
        h["vision_model.embeddings.position_ids"][0]]
    x = F.layer_norm(x, (D,), h["vision_model.pre_layrnorm.weight"], h["vision_model.pre_layrnorm.bias"], 1e-5)
    T, hd = x.shape[1], D // Hh
    for i in range(c["layers"]):
        p = f"vision_model.encoder.layers.{i}."
        r = x
        y = F.layer_norm(x, (D,), h[p + "layer_norm1.weight"], h[p + "layer_norm1.bias"], 1e-5)
        lin = lambda t, n: F.linear(t, h[p + n + ".weight"], h[p + n + ".bias"])  # noqa: E731
        q = lin(y, "self_attn.q_proj") * hd ** -0.5
        k, v = lin(y, "self_attn.k_proj"), lin(y, "self_attn.v_proj")
        shape = lambda t: t.view(B, T, Hh, hd).transpose(1, 2)  # noqa: E731
        a = torch.softmax(shape(q) @ shape(k).transpose(-1, -2), dim=-1) @ shape(v)
        x = r + lin(a.transpose(1, 2).reshape(B, T, D), "self_attn.out_proj")
        r = x
        y = F.layer_norm(x, (D,), h[p + "layer_norm2.weight"], h[p + "layer_norm2.bias"], 1e-5)
        x = r + lin(act(lin(y, "mlp.fc1")), "mlp.fc2")
    pooled = F.layer_norm(x[:, 0, :], (D,), h["vision_model.post_layernorm.weight"],
                          h["vision_model.post_layernorm.bias"], 1e-5)
    return F.linear(pooled, h["visual_projection.weight"])


def clip(gen):
    c = CLIP
    w = make_clip_openai(gen)
    x = torch.randn((2, c["channels"], c["image"], c["image"]), generator=gen).float()
    head_w = (torch.randn((c["classes"], c["output_dim"]), generator=gen, dtype=torch.float64) /
              math.sqrt(c["output_dim"])).float()
    head_b = (0.1 * torch.randn((c["classes"],), generator=gen, dtype=torch.float64)).float()
    hf = to_hf(w)
    w64 = {k: v.double() for k, v in w.items()}
    h64 = {k: (v.double() if v.is_floating_point() else v) for k, v in hf.items()}
    ref = dict(input=x, head_weight=head_w, head_bias=head_b)
    for name, act in (("quick_gelu", quick_gelu), ("gelu", F.gelu)):
        feats = openai_forward(w64, x.double(), act)
        feats_hf = hf_forward(h64, x.double(), act)
        assert torch.allclose(feats, feats_hf, atol=1e-12), (name, (feats - feats_hf).abs().max())
        ref[f"features_{name}"] = feats.float()
        ref[f"logits_{name}"] = F.linear(feats, head_w.double(), head_b.double()).float()
    # What a full CLIP checkpoint also holds; a vision loader must skip these.
    text = {"positional_embedding": torch.randn((7, 16), generator=gen).float(),
            "token_embedding.weight": torch.randn((11, 16), generator=gen).float(),
            "logit_scale": torch.tensor([4.6052]).float()}
    st.save(os.path.join(HERE, "clip_openai.safetensors"), {**w, **text}, {"format": "pt"})
    hf["text_model.embeddings.token_embedding.weight"] = text["token_embedding.weight"]
    st.save(os.path.join(HERE, "clip_hf.safetensors"), hf, {"format": "pt"})
    meta = {k: str(v) for k, v in c.items()}
    meta.update(reference="OpenAI CLIP ViT image tower, LayerNorm eps 1e-5; features = ln_post(x[:, 0]) @ proj; "
                          "logits = features @ head_weight.T + head_bias; float64 from the float32 weights")
    st.save(os.path.join(HERE, "clip_ref.safetensors"), ref, meta)
    for f in ("clip_openai", "clip_hf", "clip_ref"):
        print(f"wrote {f}.safetensors: {os.path.getsize(os.path.join(HERE, f + '.safetensors'))} bytes")


def nometa(gen):
    """gen_vit.py's timm reference (eps 1e-6, exact GELU, token pooling) on a config that no preset has."""
    from gen_vit import init_weights, vit_forward
    c = NOMETA
    cfg = dict(img_size=c["img_size"], in_chans=c["in_chans"], patch_size=c["patch_size"], embed_dim=c["embed_dim"],
               depth=c["depth"], num_heads=c["num_heads"], mlp_ratio=c["mlp_hidden"] / c["embed_dim"],
               num_classes=c["num_classes"])
    w = init_weights(cfg, gen)
    x = torch.randn((2, c["in_chans"], c["img_size"], c["img_size"]), generator=gen).float()
    logits = vit_forward({k: v.double() for k, v in w.items()}, x.double(), cfg).float()
    st.save(os.path.join(HERE, "vit_nometa.safetensors"), w, {"format": "pt"})
    st.save(os.path.join(HERE, "vit_nometa_ref.safetensors"), dict(input=x, logits=logits),
            {k: str(v) for k, v in c.items()})
    for f in ("vit_nometa", "vit_nometa_ref"):
        print(f"wrote {f}.safetensors: {os.path.getsize(os.path.join(HERE, f + '.safetensors'))} bytes")


if __name__ == "__main__":
    clip(torch.Generator().manual_seed(512))
    nometa(torch.Generator().manual_seed(64))
