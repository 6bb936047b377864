#!/usr/bin/python3
"""Expected values for tests/grpo/grpo_maths_test.cpp, computed independently
with PyTorch from TRL's formulas (GRPOTrainer `_generate_and_score_completions`
and `_compute_loss`, RLOOTrainer's leave-one-out baseline, trl.trainer.utils
masked_mean / masked_var / masked_whiten, and the k1/k2/k3 KL estimators):

    /usr/bin/python3 tests/grpo/grpo_reference.py            # print the C++ block
    /usr/bin/python3 tests/grpo/grpo_reference.py --check F   # compare with the block in F

The printed block is pasted into the C++ test between its BEGIN/END GENERATED
markers; the CTest `grpo_reference_constants` runs `--check`. Float64 throughout.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from generated_constants import main  # noqa: E402

torch.set_default_dtype(torch.float64)

# Rewards of 3 groups of 4 completions; the middle group is all equal (zero std).
REWARDS = [1.0, 0.0, 0.5, 1.0, 0.25, 0.25, 0.25, 0.25, 0.0, 2.0, 1.0, 0.0]
G = 4

# A micro-batch of 3 rows x 4 completion tokens.
LOGPS = [[-1.2, -0.4, -2.0, -0.9], [-0.3, -1.7, -0.8, -0.1], [-2.2, -0.6, -1.1, -0.5]]
OLD = [[-1.0, -0.9, -1.6, -0.9], [-0.6, -1.2, -0.8, -0.4], [-2.0, -0.2, -1.5, -0.5]]
REF = [[-1.1, -0.5, -1.9, -1.3], [-0.2, -1.5, -1.0, -0.3], [-2.4, -0.4, -1.0, -0.7]]
MASK = [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
ADV = [0.8, -1.1, 0.3]
MAX_COMPLETION_LENGTH = 6
DAPO_TOKENS = 12.5


def fmt(values):
    return "{" + ", ".join(repr(float(v)) for v in values) + "}"


def grpo_advantages(rewards, scale):
    rewards = torch.tensor(rewards)
    mean = rewards.view(-1, G).mean(dim=1).repeat_interleave(G)
    advantages = rewards - mean
    if scale in ("group", "none"):
        std = rewards.view(-1, G).std(dim=1).repeat_interleave(G)
    else:
        std = rewards.std().expand_as(rewards)
    zero = torch.isclose(std, torch.zeros_like(std))
    if scale != "none":
        advantages = advantages / (std + 1e-4)
    return advantages, [mean.mean().item(), std.mean().item(), zero.double().mean().item()]


def grpo_loss(loss_type, beta, eps_low, eps_high):
    logps = torch.tensor(LOGPS, requires_grad=True)
    old, ref, mask = torch.tensor(OLD), torch.tensor(REF), torch.tensor(MASK, dtype=torch.float64)
    adv = torch.tensor(ADV).unsqueeze(1)
    coef_1 = torch.exp(logps - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    per_token_kl = torch.exp(ref - logps) - (ref - logps) - 1
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * MAX_COMPLETION_LENGTH)
    else:  # dapo: the update's active tokens, here given
        loss = (per_token_loss * mask).sum() / DAPO_TOKENS
    loss.backward()

    def token_mean(x):
        return ((x.double() * mask).sum() / mask.sum()).item()

    with torch.no_grad():
        low = (coef_1 < 1 - eps_low) & (adv < 0)
        high = (coef_1 > 1 + eps_high) & (adv > 0)
        metrics = [token_mean(per_token_kl), token_mean(low), token_mean(high), token_mean(low | high)]
    return loss.item(), logps.grad.flatten().tolist(), metrics


def rloo(rewards, seq_kl, beta, normalize):
    rewards = torch.tensor(rewards) - beta * torch.tensor(seq_kl)
    grouped = rewards.view(-1, 2)
    baselines = ((grouped.sum(dim=1, keepdim=True) - grouped) / (2 - 1)).view(-1)
    advantages = rewards - baselines
    if normalize:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-4)
    return rewards, advantages


def rloo_loss(eps_low, eps_high):
    logps = torch.tensor(LOGPS, requires_grad=True)
    old, mask = torch.tensor(OLD), torch.tensor(MASK, dtype=torch.float64)
    adv = torch.tensor(ADV)
    log_ratio = ((logps - old) * mask).sum(-1)
    coef_1 = torch.exp(log_ratio)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    loss = -torch.min(coef_1 * adv, coef_2 * adv).mean()
    loss.backward()
    clipped = ((coef_1 < 1 - eps_low) & (adv < 0)) | ((coef_1 > 1 + eps_high) & (adv > 0))
    return loss.item(), logps.grad.flatten().tolist(), clipped.double().mean().item()


def kl_and_whitening():
    logp, ref = torch.tensor(LOGPS).flatten(), torch.tensor(REF).flatten()
    r = ref - logp
    k1, k2, k3 = -r, 0.5 * r * r, torch.exp(r) - r - 1
    values, mask = torch.tensor(LOGPS), torch.tensor(MASK, dtype=torch.float64)
    mean = (values * mask).sum() / mask.sum()
    centered = values - mean
    var = (centered**2 * mask).sum() / mask.sum()
    unbiased = var * mask.sum() / (mask.sum() - 1)
    whitened = (values - mean) * torch.rsqrt(unbiased + 1e-8)
    return k1.tolist(), k2.tolist(), k3.tolist(), [mean.item(), var.item(), unbiased.item()], whitened.flatten().tolist()


def generate():
    out = ["// BEGIN GENERATED by tests/grpo/grpo_reference.py"]
    for scale in ("group", "batch", "none"):
        adv, metrics = grpo_advantages(REWARDS, scale)
        out.append(f"const std::vector<double> kAdvantages_{scale} = {fmt(adv.tolist())};")
        out.append(f"const std::vector<double> kAdvantageMetrics_{scale} = {fmt(metrics)};  // reward, reward_std, frac_reward_zero_std")
    for name, loss_type, beta, low, high in (
        ("grpo", "grpo", 0.0, 0.2, 0.2),
        ("bnpo", "bnpo", 0.04, 0.2, 0.2),
        ("dr_grpo", "dr_grpo", 0.04, 0.2, 0.28),
        ("dapo", "dapo", 0.0, 0.2, 0.28),
        ("dapo_kl", "dapo", 0.1, 0.1, 0.3),
    ):
        loss, grad, metrics = grpo_loss(loss_type, beta, low, high)
        out.append(f"const double kLoss_{name} = {loss!r};")
        out.append(f"const std::vector<double> kGrad_{name} = {fmt(grad)};")
        out.append(f"const std::vector<double> kClip_{name} = {fmt(metrics)};  // kl, low, high, region")
    rewards, adv = rloo([1.0, 0.0, 0.5, 0.5, 2.0, -1.0], [0.3, -0.2, 0.1, 0.4, 0.0, 1.5], 0.05, False)
    out.append(f"const std::vector<double> kRlooRewards = {fmt(rewards.tolist())};")
    out.append(f"const std::vector<double> kRlooAdvantages = {fmt(adv.tolist())};")
    _, adv = rloo([1.0, 0.0, 0.5, 0.5, 2.0, -1.0], [0.3, -0.2, 0.1, 0.4, 0.0, 1.5], 0.05, True)
    out.append(f"const std::vector<double> kRlooNormalized = {fmt(adv.tolist())};")
    loss, grad, clipped = rloo_loss(0.2, 0.2)
    out.append(f"const double kRlooLoss = {loss!r};")
    out.append(f"const std::vector<double> kRlooGrad = {fmt(grad)};")
    out.append(f"const double kRlooClip = {clipped!r};")
    k1, k2, k3, stats, whitened = kl_and_whitening()
    out.append(f"const std::vector<double> kK1 = {fmt(k1)};")
    out.append(f"const std::vector<double> kK2 = {fmt(k2)};")
    out.append(f"const std::vector<double> kK3 = {fmt(k3)};")
    out.append(f"const std::vector<double> kMaskedStats = {fmt(stats)};  // mean, var, unbiased var")
    out.append(f"const std::vector<double> kWhitened = {fmt(whitened)};")
    out.append("// END GENERATED")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main(generate, __doc__)
