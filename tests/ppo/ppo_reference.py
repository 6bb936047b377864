#!/usr/bin/python3
"""Expected values for tests/ppo/ppo_math_test.cpp, computed independently with
PyTorch in the way TRL's PPOTrainer (trl/experimental/ppo/ppo_trainer.py, HEAD)
computes them, except that the score is added at each row's last completion
token (TRL: one position later) and values share the completion mask:

    kl = -(ref - logp) (k1) or exp(ref - logp) - 1 - (ref - logp) (k3); non_score = -kl_coef * kl
    scores[~contains_eos] -= missing_eos_penalty; rewards = non_score; rewards[last] += scores
    GAE: lastgaelam = r_t + gamma V_{t+1} - V_t + gamma lam lastgaelam; returns = A + V
    advantages = masked_whiten(A, mask) (unbiased variance), 0 outside the mask
    pg = masked_mean(max(-A ratio, -A clamp(ratio, 1-eps, 1+eps))); vf = 0.5 masked_mean(max(...))

    /usr/bin/python3 tests/ppo/ppo_reference.py            # print the C++ block
    /usr/bin/python3 tests/ppo/ppo_reference.py --check F   # compare with the block in F

Everything runs in float64.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from generated_constants import main  # noqa: E402

torch.set_default_dtype(torch.float64)

# Three completions of lengths 5, 3 and 1 (right-padded to 5); the last one was cut off before EOS.
LENGTHS = [5, 3, 1]
CONTAINS_EOS = [True, True, False]
LOGPROBS = [[-1.2, -0.7, -2.1, -0.3, -0.9], [-0.5, -1.6, -0.2, 0.0, 0.0], [-2.4, 0.0, 0.0, 0.0, 0.0]]
REF_LOGPROBS = [[-1.0, -0.9, -1.8, -0.6, -0.9], [-0.7, -1.1, -0.4, 0.0, 0.0], [-2.0, 0.0, 0.0, 0.0, 0.0]]
SCORES = [1.5, -0.25, 0.75]
VALUES = [[0.3, -0.2, 0.5, 0.1, 0.9], [-0.4, 0.6, 0.2, 0.0, 0.0], [0.8, 0.0, 0.0, 0.0, 0.0]]
NEW_LOGPROBS = [[-1.0, -0.95, -2.0, -0.1, -1.3], [-0.45, -1.9, -0.35, 0.0, 0.0], [-2.2, 0.0, 0.0, 0.0, 0.0]]
NEW_VALUES = [[0.55, -0.3, 0.2, 0.45, 0.7], [-0.3, 0.95, 0.1, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0, 0.0]]
KL_COEF = 0.05
PENALTY = 1.0
GAMMA = 1.0
LAM = 0.95
CLIPRANGE = 0.2
CLIPRANGE_VALUE = 0.2
VF_COEF = 0.1


def mask():
    return torch.arange(5).unsqueeze(0) < torch.tensor(LENGTHS).unsqueeze(1)


def masked_mean(values, m):
    return (values * m).sum() / m.sum()


def masked_whiten(values, m):
    mean = masked_mean(values, m)
    var = masked_mean((values - mean) ** 2, m)
    var = var * m.sum() / (m.sum() - 1)
    return (values - mean) * torch.rsqrt(var + 1e-8)


def rewards(estimator, penalty):
    m = mask()
    logr = (torch.tensor(REF_LOGPROBS) - torch.tensor(LOGPROBS)).masked_fill(~m, 0.0)
    kl = -logr if estimator == "k1" else (logr.exp() - 1) - logr
    non_score = -KL_COEF * kl
    scores = torch.tensor(SCORES).clone()
    if penalty is not None:
        scores[~torch.tensor(CONTAINS_EOS)] -= penalty
    out = non_score.clone()
    out[torch.arange(3), torch.tensor(LENGTHS) - 1] += scores
    return out, kl, scores


def gae(rewards_, values):
    m = mask()
    values = values.masked_fill(~m, 0.0)
    rewards_ = rewards_.masked_fill(~m, 0.0)
    lastgaelam = 0
    reversed_ = []
    for t in reversed(range(5)):
        nextvalues = values[:, t + 1] if t < 4 else 0.0
        delta = rewards_[:, t] + GAMMA * nextvalues - values[:, t]
        lastgaelam = delta + GAMMA * LAM * lastgaelam
        reversed_.append(lastgaelam)
    advantages = torch.stack(reversed_[::-1], axis=1)
    returns = (advantages + values).masked_fill(~m, 0.0)
    advantages = masked_whiten(advantages, m).masked_fill(~m, 0.0)
    return advantages, returns


def loss(advantages, returns):
    m = mask()
    new_logprobs = torch.tensor(NEW_LOGPROBS, requires_grad=True)
    new_values = torch.tensor(NEW_VALUES, requires_grad=True)
    old_logprobs, old_values = torch.tensor(LOGPROBS), torch.tensor(VALUES)
    diff = (new_logprobs - old_logprobs).masked_fill(~m, 0.0)
    ratio = torch.exp(diff)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - CLIPRANGE, 1.0 + CLIPRANGE)
    pg_loss = masked_mean(torch.max(pg1, pg2), m)
    pg_clipfrac = masked_mean((pg2 > pg1).double(), m)
    approxkl = 0.5 * masked_mean(diff.detach() ** 2, m)
    vpred = new_values.masked_fill(~m, 0.0)
    vclipped = torch.clamp(vpred, old_values - CLIPRANGE_VALUE, old_values + CLIPRANGE_VALUE)
    vf1 = (vpred - returns) ** 2
    vf2 = (vclipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf1, vf2), m)
    vf_clipfrac = masked_mean((vf2 > vf1).double(), m)
    total = pg_loss + VF_COEF * vf_loss
    total.backward()
    metrics = [pg_loss.item(), vf_loss.item(), approxkl.item(), pg_clipfrac.item(), vf_clipfrac.item()]
    return total.item(), metrics, new_logprobs.grad, new_values.grad


def rows(t):
    return "{" + ", ".join("{" + ", ".join(repr(float(x)) for x in row) + "}" for row in t.tolist()) + "}"


def flat(values):
    return "{" + ", ".join(repr(float(x)) for x in values) + "}"


def generate():
    k1_rewards, k1_kl, k1_scores = rewards("k1", None)
    k3_rewards, k3_kl, k3_scores = rewards("k3", PENALTY)
    advantages, returns = gae(k1_rewards, torch.tensor(VALUES))
    total, metrics, grad_logprobs, grad_values = loss(advantages, returns)
    lines = [
        "// BEGIN GENERATED by tests/ppo/ppo_reference.py (TRL's PPO maths in PyTorch, float64).",
        "// Do not edit by hand: re-run `/usr/bin/python3 tests/ppo/ppo_reference.py` and paste its output",
        "// here. The CTest ppo_reference_constants fails when this block and the script disagree.",
        f"constexpr int64_t kLengths[] = {{{', '.join(str(n) for n in LENGTHS)}}};",
        f"constexpr bool kContainsEos[] = {{{', '.join('true' if e else 'false' for e in CONTAINS_EOS)}}};",
        f"constexpr double kLogprobs[3][5] = {rows(torch.tensor(LOGPROBS))};",
        f"constexpr double kRefLogprobs[3][5] = {rows(torch.tensor(REF_LOGPROBS))};",
        f"constexpr double kScores[] = {flat(SCORES)};",
        f"constexpr double kValues[3][5] = {rows(torch.tensor(VALUES))};",
        f"constexpr double kNewLogprobs[3][5] = {rows(torch.tensor(NEW_LOGPROBS))};",
        f"constexpr double kNewValues[3][5] = {rows(torch.tensor(NEW_VALUES))};",
        f"constexpr double kKlCoef = {KL_COEF!r}, kPenalty = {PENALTY!r}, kGamma = {GAMMA!r}, kLam = {LAM!r};",
        f"constexpr double kCliprange = {CLIPRANGE!r}, kCliprangeValue = {CLIPRANGE_VALUE!r}, kVfCoef = {VF_COEF!r};",
        "// k1, no missing-EOS penalty",
        f"constexpr double kK1Rewards[3][5] = {rows(k1_rewards)};",
        f"constexpr double kK1Kl[3][5] = {rows(k1_kl)};",
        f"constexpr double kK1Scores[] = {flat(k1_scores.tolist())};",
        "// k3, missing-EOS penalty kPenalty",
        f"constexpr double kK3Rewards[3][5] = {rows(k3_rewards)};",
        f"constexpr double kK3Kl[3][5] = {rows(k3_kl)};",
        f"constexpr double kK3Scores[] = {flat(k3_scores.tolist())};",
        "// GAE over kK1Rewards and kValues",
        f"constexpr double kAdvantages[3][5] = {rows(advantages)};",
        f"constexpr double kReturns[3][5] = {rows(returns)};",
        "// ppo_loss: total, then policy loss, value loss, approxkl, policy clipfrac, value clipfrac; gradients",
        f"constexpr double kLoss = {total!r};",
        f"constexpr double kLossMetrics[] = {flat(metrics)};",
        f"constexpr double kGradLogprobs[3][5] = {rows(grad_logprobs)};",
        f"constexpr double kGradValues[3][5] = {rows(grad_values)};",
        "// END GENERATED",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(generate, __doc__)
