#!/usr/bin/python3
"""DPO training the way TRL's DPOTrainer does it, in plain PyTorch: the Python
side of bench/dpo (see README.md there).

    reference_dpo.py --model DIR --data PREFS.jsonl --out RESULT.json
                     [--steps 16] [--batch 8] [--beta 0.1] [--learning-rate 1e-4]
                     [--weight-decay 0.01] [--max-grad-norm 1.0] [--threads 2]

The model is an independent Llama forward written from Hugging Face
transformers' modeling_llama.py (eager attention, as LlamaForCausalLM in
training mode), loaded from the folder's model.safetensors parsed with
struct + json + torch.frombuffer. The loop follows TRL (v0.19+):

* data in file order (shuffle off), `batch` pairs a step; rows 0..B-1 are
  prompt + chosen, rows B..2B-1 prompt + rejected, right padded to one width
  (TRL's concatenated_inputs after flush_left), one forward of the policy;
* the reference is a frozen copy of the same checkpoint in eval mode, run
  under no_grad on the same concatenated batch (precompute_ref_log_probs off);
* log-probs: TRL's concatenated_forward (labels rolled by one, the loss mask
  on completion tokens, selective_log_softmax, summed per row);
* loss: sigmoid, -logsigmoid(beta * (chosen log-ratio - rejected log-ratio)), mean over pairs;
* torch.nn.utils.clip_grad_norm_, then torch.optim.AdamW at a constant learning
  rate, weight decay on every parameter but biases and norms (HF Trainer's
  grouping), after TRL's step metrics.

Writes RESULT.json: per step the loss, grad_norm, logps/chosen,
logps/rejected, rewards/margins, the real (non-padding) tokens of the
policy's forward and the time.perf_counter() at the end of the step (after
the optimizer and the metrics, where AlignKit logs the step).
"""
import argparse
import json
import os
import struct
import time

import torch
import torch.nn.functional as F
from torch import nn

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


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
        flat = torch.frombuffer(bytearray(data[start + begin : start + end]), dtype=SAFETENSORS_DTYPES[info["dtype"]])
        tensors[name] = flat.reshape(info["shape"]).to(torch.float32)
    return tensors


class RMSNorm(nn.Module):
    # LlamaRMSNorm
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        input_dtype = x.dtype
        x = x.to(torch.float32)
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        return self.weight * x.to(input_dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n_rep):
    # (B, kv_heads, T, D) -> (B, kv_heads * n_rep, T, D)
    if n_rep == 1:
        return x
    batch, heads, length, dim = x.shape
    return x[:, :, None, :, :].expand(batch, heads, n_rep, length, dim).reshape(batch, heads * n_rep, length, dim)


class Attention(nn.Module):
    # LlamaAttention with eager_attention_forward
    def __init__(self, config):
        super().__init__()
        hidden = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.kv_heads = config.get("num_key_value_heads") or self.heads
        self.head_dim = config.get("head_dim") or hidden // self.heads
        bias = bool(config.get("attention_bias", False))
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=bias)
        self.dropout = config.get("attention_dropout", 0.0)

    def forward(self, x, cos, sin, mask):
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)  # (B, heads, T, D)
        k = self.k_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)  # (B, kv_heads, T, D)
        v = self.v_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, self.heads // self.kv_heads)
        v = repeat_kv(v, self.heads // self.kv_heads)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.head_dim**-0.5 + mask  # (B, heads, T, T)
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        probs = F.dropout(probs, p=self.dropout, training=self.training)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(batch, length, -1)  # (B, T, heads * D)
        return self.o_proj(out)


class Mlp(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden, inner = config["hidden_size"], config["intermediate_size"]
        bias = bool(config.get("mlp_bias", False))
        self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        eps = config.get("rms_norm_eps", 1e-6)
        self.self_attn = Attention(config)
        self.mlp = Mlp(config)
        self.input_layernorm = RMSNorm(config["hidden_size"], eps)
        self.post_attention_layernorm = RMSNorm(config["hidden_size"], eps)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config["vocab_size"], config["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config["num_hidden_layers"]))
        self.norm = RMSNorm(config["hidden_size"], config.get("rms_norm_eps", 1e-6))
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        base = config.get("rope_theta", 10000.0)
        if config.get("rope_scaling") or config.get("rope_parameters"):
            raise ValueError("the reference implements only default RoPE")
        # _compute_default_rope_parameters
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, input_ids, attention_mask):
        batch, length = input_ids.shape
        x = self.embed_tokens(input_ids)  # (B, T, H)
        # No position_ids given (TRL's non-padding-free path): cache_position = arange(T).
        positions = torch.arange(length)[None, :].expand(batch, length).float()  # (B, T)
        freqs = (self.inv_freq[None, :, None] @ positions[:, None, :]).transpose(1, 2)  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]  # (B, 1, T, D)
        # The 4-D additive mask: causal and padding, the dtype's lowest value where hidden.
        causal = torch.ones(length, length, dtype=torch.bool).tril()  # (T, T)
        visible = causal[None, None] & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)
        mask = torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)
        if config.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids, attention_mask):
        return self.lm_head(self.model(input_ids, attention_mask)).float()  # (B, T, V)


def load_model(folder):
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    if config.get("model_type") != "llama":
        raise ValueError("%s: the reference implements model_type llama only" % folder)
    model = LlamaForCausalLM(config)
    weights = read_safetensors(os.path.join(folder, "model.safetensors"))
    if config.get("tie_word_embeddings", False):
        weights.setdefault("lm_head.weight", weights["model.embed_tokens.weight"])
    model.load_state_dict(weights, strict=True)
    return model, config


def read_pairs(path):
    pairs = []
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                pairs.append((record["prompt_ids"], record["chosen_ids"], record["rejected_ids"]))
    return pairs


def concatenated_batch(pairs, pad_id):
    """prompt + chosen rows, then prompt + rejected rows, right padded (ids used exactly as given)."""
    rows = [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs]
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (2B, T)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)  # (2B, T)
    loss_mask = torch.zeros(len(rows), width, dtype=torch.bool)  # (2B, T): completion tokens
    for i, (prompt, completion) in enumerate(rows):
        ids = prompt + completion
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        loss_mask[i, len(prompt) : len(ids)] = True
    return input_ids, attention_mask, loss_mask


def selective_log_softmax(logits, index):
    # TRL's selective_log_softmax for float32 logits: gather, then one row's logsumexp at a time.
    selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)  # (2B, T)
    logsumexp = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])  # (2B, T)
    return selected - logsumexp


def concatenated_forward(model, input_ids, attention_mask, loss_mask):
    """TRL's DPOTrainer.concatenated_forward: summed completion log-probs of each row and the logits."""
    logits = model(input_ids, attention_mask)  # (2B, T, V)
    labels = torch.roll(input_ids, shifts=-1, dims=1)
    shifted_mask = torch.roll(loss_mask, shifts=-1, dims=1)
    labels = labels.masked_fill(~shifted_mask, 0)
    per_token = selective_log_softmax(logits, labels).masked_fill(~shifted_mask, 0.0)  # (2B, T)
    per_token = torch.roll(per_token, shifts=1, dims=1)
    return per_token[:, 1:].sum(-1), logits, shifted_mask  # (2B)


def decay_groups(model, weight_decay):
    # HF Trainer's grouping, as AlignKit's: no decay on biases, norms and 1-D tensors.
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        skip = parameter.dim() < 2 or "bias" in name or "norm" in name
        (no_decay if skip else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    policy, config = load_model(args.model)
    reference, _ = load_model(args.model)
    reference.eval()
    reference.requires_grad_(False)
    policy.train()
    pad_id = config.get("pad_token_id")
    if pad_id is None:
        pad_id = config["eos_token_id"]
    pairs = read_pairs(args.data)
    if len(pairs) < args.steps * args.batch:
        raise SystemExit("%s: %d pairs, fewer than steps x batch = %d" % (args.data, len(pairs), args.steps * args.batch))
    optimizer = torch.optim.AdamW(decay_groups(policy, args.weight_decay), lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8)

    steps = []
    for step in range(args.steps):
        batch = pairs[step * args.batch : (step + 1) * args.batch]
        input_ids, attention_mask, loss_mask = concatenated_batch(batch, pad_id)
        with torch.no_grad():
            reference_logps, _, _ = concatenated_forward(reference, input_ids, attention_mask, loss_mask)
        logps, logits, shifted_mask = concatenated_forward(policy, input_ids, attention_mask, loss_mask)
        n = len(batch)
        chosen_logratios = logps[:n] - reference_logps[:n]  # (B)
        rejected_logratios = logps[n:] - reference_logps[n:]  # (B)
        loss = -F.logsigmoid(args.beta * (chosen_logratios - rejected_logratios)).mean()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        # TRL's step metrics (they cost .item() syncs and a pass over the logits, as AlignKit's do).
        chosen_rewards = args.beta * chosen_logratios.detach()
        rejected_rewards = args.beta * rejected_logratios.detach()
        completion = shifted_mask[:, :-1]
        record = {
            "step": step + 1,
            "loss": loss.item(),
            "grad_norm": grad_norm.item(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
            "logps/chosen": logps[:n].detach().mean().item(),
            "logps/rejected": logps[n:].detach().mean().item(),
            "logits/chosen": logits[:n, :-1][completion[:n]].detach().mean().item(),
            "logits/rejected": logits[n:, :-1][completion[n:]].detach().mean().item(),
            "tokens": int(attention_mask.sum().item()),
            "time": time.perf_counter(),
        }
        steps.append(record)
        print("[python] step %d/%d | loss %.6f | grad_norm %.4f" % (step + 1, args.steps, record["loss"], record["grad_norm"]), flush=True)

    with open(args.out, "w") as f:
        json.dump({"threads": torch.get_num_threads(), "torch": torch.__version__, "steps": steps}, f)


if __name__ == "__main__":
    main()
