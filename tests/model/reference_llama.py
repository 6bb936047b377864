#!/usr/bin/python3
"""Reference forward pass of Llama / Mistral / Qwen2 decoders, for parity tests.

Written from Hugging Face transformers' modeling_llama.py, modeling_mistral.py
and modeling_qwen2.py (eager attention) and their configuration classes, not
from AlignKit's C++: it reads a model folder (config.json + safetensors,
parsed here with struct + json + torch.frombuffer, so no `safetensors`
package is needed) and prints, as JSON, the log-probability of every next
token of each sequence, and optionally per-position head values.

    reference_llama.py MODEL_DIR INPUTS_JSON [lm|scalar|value]

INPUTS_JSON holds {"sequences": [[ids...], ...]}; each sequence is run alone,
unpadded, at positions 0..T-1. Output: {"logprobs": [[...], ...]} for lm and
value, plus {"values": [[...], ...]} for scalar and value heads.
Needs torch (python3-torch 1.13 works) and nothing else.
"""
import json
import math
import os
import struct
import sys

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size].decode("utf-8"))
    start = 8 + header_size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        if end > begin:
            flat = torch.frombuffer(bytearray(data[start + begin : start + end]), dtype=dtype)
        else:
            flat = torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(info["shape"])
    return tensors


def read_weights(folder):
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(read_safetensors(os.path.join(folder, shard)))
    return {name: tensors[name] for name in weight_map}


def rope_parameters(config):
    """(rope_type, theta, scaling dict) from the 4.x or the 5.x form."""
    if config.get("rope_parameters") is not None:
        params = config["rope_parameters"]
        return params.get("rope_type", params.get("type", "default")), params.get("rope_theta", 10000.0), params
    scaling = config.get("rope_scaling") or {}
    return scaling.get("rope_type", scaling.get("type", "default")), config.get("rope_theta", 10000.0), scaling


def inverse_frequencies(config, head_dim):
    rope_type, base, scaling = rope_parameters(config)
    # _compute_default_rope_parameters
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        # _compute_linear_scaling_rope_parameters
        return inv_freq / scaling["factor"]
    if rope_type == "llama3":
        # _compute_llama3_parameters
        factor = scaling["factor"]
        low_freq_factor = scaling["low_freq_factor"]
        high_freq_factor = scaling["high_freq_factor"]
        old_context_len = scaling["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)
    raise ValueError("rope type %r not implemented in the reference" % rope_type)


def rms_norm(x, weight, eps):
    # LlamaRMSNorm / Qwen2RMSNorm / MistralRMSNorm
    input_dtype = x.dtype
    x = x.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    return weight * x.to(input_dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n_rep):
    # (kv_heads, T, D) -> (kv_heads * n_rep, T, D), each kv head repeated n_rep times in a row
    heads, length, dim = x.shape
    return x[:, None, :, :].expand(heads, n_rep, length, dim).reshape(heads * n_rep, length, dim)


def linear(x, weights, prefix, bias):
    y = x @ weights[prefix + ".weight"].t()
    if bias:
        y = y + weights[prefix + ".bias"]
    return y


def final_hidden(config, weights, ids):
    model_type = config["model_type"]
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    eps = config.get("rms_norm_eps", 1e-6)
    if model_type == "qwen2":
        qkv_bias, o_bias, mlp_bias = True, False, False
    elif model_type == "mistral":
        qkv_bias = o_bias = mlp_bias = False
    else:
        qkv_bias = o_bias = bool(config.get("attention_bias", False))
        mlp_bias = bool(config.get("mlp_bias", False))
    # MistralConfig defaults to a 4096 window; null turns it off.
    window = config.get("sliding_window", 4096) if model_type == "mistral" else None

    length = len(ids)
    x = weights["model.embed_tokens.weight"][torch.tensor(ids)]  # (T, H)
    positions = torch.arange(length).float()
    freqs = positions[:, None] * inverse_frequencies(config, head_dim)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()  # (T, D)
    q_index = torch.arange(length)[:, None]
    k_index = torch.arange(length)[None, :]
    visible = k_index <= q_index
    if window is not None:
        visible = visible & (q_index - k_index < window)

    for layer in range(config["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        h = rms_norm(x, weights[p + "input_layernorm.weight"], eps)
        q = linear(h, weights, p + "self_attn.q_proj", qkv_bias).view(length, heads, head_dim).transpose(0, 1)
        k = linear(h, weights, p + "self_attn.k_proj", qkv_bias).view(length, kv_heads, head_dim).transpose(0, 1)
        v = linear(h, weights, p + "self_attn.v_proj", qkv_bias).view(length, kv_heads, head_dim).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, heads // kv_heads)
        v = repeat_kv(v, heads // kv_heads)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(head_dim)
        scores = scores.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        attn = (probs @ v).transpose(0, 1).reshape(length, heads * head_dim)
        x = x + linear(attn, weights, p + "self_attn.o_proj", o_bias)
        h = rms_norm(x, weights[p + "post_attention_layernorm.weight"], eps)
        gate = linear(h, weights, p + "mlp.gate_proj", mlp_bias)
        up = linear(h, weights, p + "mlp.up_proj", mlp_bias)
        x = x + linear(torch.nn.functional.silu(gate) * up, weights, p + "mlp.down_proj", mlp_bias)
    return rms_norm(x, weights["model.norm.weight"], eps)


def main():
    folder, inputs_path = sys.argv[1], sys.argv[2]
    head = sys.argv[3] if len(sys.argv) > 3 else "lm"
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    with open(inputs_path) as f:
        sequences = json.load(f)["sequences"]
    weights = {name: t.to(torch.float32) for name, t in read_weights(folder).items()}
    if config.get("tie_word_embeddings", False):
        output = weights["model.embed_tokens.weight"]
    else:
        output = weights.get("lm_head.weight")

    result = {"logprobs": [], "values": []}
    with torch.no_grad():
        for ids in sequences:
            hidden = final_hidden(config, weights, ids)  # (T, H)
            if head in ("lm", "value"):
                logprobs = torch.log_softmax((hidden @ output.t()).float(), dim=-1)
                result["logprobs"].append([logprobs[t, ids[t + 1]].item() for t in range(len(ids) - 1)])
            if head == "scalar":
                # LlamaForSequenceClassification.score, before pooling
                result["values"].append((hidden @ weights["score.weight"].t())[:, 0].tolist())
            if head == "value":
                # TRL ValueHead: summary = Linear(H, 1)
                values = hidden @ weights["v_head.summary.weight"].t() + weights["v_head.summary.bias"]
                result["values"].append(values[:, 0].tolist())
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
