#!/usr/bin/python3
"""Expected values for tests/training/dpo_losses_test.cpp, computed independently
with PyTorch from TRL's DPOTrainer formulas (HEAD, `_compute_loss`).

    /usr/bin/python3 tests/training/dpo_reference.py            # print the C++ block
    /usr/bin/python3 tests/training/dpo_reference.py --check F   # compare with the block in F

The printed block (inputs and expected outputs) is pasted into the C++ test
between its BEGIN/END GENERATED markers, so the test needs no Python at run
time; the CTest `dpo_reference_constants` runs `--check`, so the constants
cannot drift from this script.

Everything runs in float64. The formulas below are transcribed from TRL, not
from our C++: in particular IPO divides the summed log-ratios by the completion
lengths here (as TRL does), while the C++ side receives per-token averaged
log-probs (its documented contract), so the two routes meet only if that
contract is right.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from generated_constants import main  # noqa: E402

torch.set_default_dtype(torch.float64)

# Hand-made per-sequence summed log-probs of a batch of 4 pairs. The log-ratios
# are chosen so that one pair is mis-ordered (accuracy 3/4) and, with beta=0.5,
# one hinge term sits past the hinge (relu at zero).
POLICY_CHOSEN = [-12.5, -30.25, -7.0, -55.5]
POLICY_REJECTED = [-14.0, -28.75, -9.5, -60.0]
REFERENCE_CHOSEN = [-13.0, -29.5, -8.25, -57.0]
REFERENCE_REJECTED = [-13.5, -29.0, -9.0, -58.5]
CHOSEN_LENGTHS = [5, 11, 3, 20]
REJECTED_LENGTHS = [8, 9, 4, 17]
CHOSEN_NLL = 2.375

# (loss types, weights, beta, label_smoothing, reference_free)
CASES = [
    (["sigmoid"], [1.0], 0.1, 0.0, False),
    (["hinge"], [1.0], 0.1, 0.0, False),
    (["ipo"], [1.0], 0.1, 0.0, False),
    (["robust"], [1.0], 0.1, 0.1, False),
    (["bco_pair"], [1.0], 0.1, 0.0, False),
    (["sppo_hard"], [1.0], 0.1, 0.0, False),
    (["nca_pair"], [1.0], 0.1, 0.0, False),
    (["apo_zero"], [1.0], 0.1, 0.0, False),
    (["apo_down"], [1.0], 0.1, 0.0, False),
    (["sft"], [1.0], 0.1, 0.0, False),
    (["sigmoid"], [1.0], 0.5, 0.0, False),
    (["hinge"], [1.0], 0.5, 0.0, False),
    (["ipo"], [1.0], 0.5, 0.0, False),
    (["sppo_hard"], [1.0], 0.5, 0.0, False),
    (["robust"], [1.0], 0.5, 0.25, False),
    (["sigmoid", "sft"], [1.0, 0.5], 0.1, 0.0, False),
    (["sigmoid", "ipo", "bco_pair"], [0.3, 0.5, 0.2], 0.2, 0.0, False),
    (["apo_zero", "nca_pair"], [1.0, 1.0], 0.1, 0.0, False),
    (["sigmoid"], [1.0], 0.1, 0.0, True),
    (["ipo"], [1.0], 0.1, 0.0, True),
    (["hinge", "sft"], [2.0, 1.0], 0.1, 0.0, True),
]

# Token-level helpers: logits (2, 3, 5), labels (2, 3) with -100 outside the
# mask, mask (2, 3). Row 1 has one masked-out position.
LOGITS = [
    [[1.0, -0.5, 0.25, 2.0, -1.0], [0.0, 0.5, -0.25, 0.75, 1.5], [-2.0, 1.0, 0.5, 0.0, 0.25]],
    [[0.3, 0.2, -0.1, 0.0, 0.9], [1.25, -1.5, 2.5, 0.5, -0.75], [0.6, 0.6, -0.6, 1.2, 0.1]],
]
LABELS = [[3, 1, 1], [4, 0, -100]]
MASK = [[1, 1, 1], [1, 1, 0]]


def trl_preference_loss(loss_types, weights, beta, label_smoothing, reference_free, inputs):
    """TRL HEAD `_compute_loss` from the log-probs on (reverse-KL scores)."""
    chosen_logps, rejected_logps, chosen_nll = inputs
    if reference_free:
        ref_chosen_logps = torch.zeros(4)
        ref_rejected_logps = torch.zeros(4)
    else:
        ref_chosen_logps = torch.tensor(REFERENCE_CHOSEN)
        ref_rejected_logps = torch.tensor(REFERENCE_REJECTED)
    chosen_scores = chosen_logps - ref_chosen_logps
    rejected_scores = rejected_logps - ref_rejected_logps
    delta_score = chosen_scores - rejected_scores
    loss = 0.0
    for loss_type, loss_weight in zip(loss_types, weights):
        if loss_type == "sigmoid":
            per_sequence_loss = -F.logsigmoid(beta * delta_score)
        elif loss_type == "hinge":
            per_sequence_loss = torch.relu(1 - beta * delta_score)
        elif loss_type == "ipo":
            chosen_avg_score = chosen_scores / torch.tensor(CHOSEN_LENGTHS, dtype=torch.float64).clamp(min=1.0)
            rejected_avg_score = rejected_scores / torch.tensor(REJECTED_LENGTHS, dtype=torch.float64).clamp(min=1.0)
            ipo_delta = chosen_avg_score - rejected_avg_score
            per_sequence_loss = (ipo_delta - 1 / (2 * beta)) ** 2
        elif loss_type == "nca_pair":
            chosen_rewards = beta * chosen_scores
            rejected_rewards = beta * rejected_scores
            per_sequence_loss = (
                -F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards) - 0.5 * F.logsigmoid(-rejected_rewards)
            )
        elif loss_type == "robust":
            clean_loss_term = -(1 - label_smoothing) * F.logsigmoid(beta * delta_score)
            flipped_loss_term = -label_smoothing * F.logsigmoid(-beta * delta_score)
            per_sequence_loss = (clean_loss_term - flipped_loss_term) / (1 - 2 * label_smoothing)
        elif loss_type == "bco_pair":
            chosen_rewards = beta * chosen_scores
            rejected_rewards = beta * rejected_scores
            per_sequence_loss = -F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards)
        elif loss_type == "sppo_hard":
            per_sequence_loss = (chosen_scores - 0.5 / beta) ** 2 + (rejected_scores + 0.5 / beta) ** 2
        elif loss_type == "apo_zero":
            per_sequence_loss = 1 - torch.sigmoid(beta * chosen_scores) + torch.sigmoid(beta * rejected_scores)
        elif loss_type == "apo_down":
            per_sequence_loss = torch.sigmoid(beta * chosen_scores) + 1 - torch.sigmoid(beta * delta_score)
        elif loss_type == "sft":
            per_sequence_loss = chosen_nll.expand(4)
        else:
            raise ValueError(loss_type)
        loss = loss + per_sequence_loss.mean() * loss_weight

    chosen_rewards = beta * chosen_scores.detach()
    rejected_rewards = beta * rejected_scores.detach()
    metrics = [
        chosen_rewards.mean().item(),
        rejected_rewards.mean().item(),
        (chosen_rewards > rejected_rewards).double().mean().item(),
        (chosen_rewards - rejected_rewards).mean().item(),
        chosen_logps.detach().mean().item(),
        rejected_logps.detach().mean().item(),
    ]
    return loss, chosen_rewards, rejected_rewards, metrics


def fmt(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(fmt(v) for v in value) + "}"
    return repr(float(value))


def generate():
    lines = []
    out = lines.append
    out("// BEGIN GENERATED by tests/training/dpo_reference.py (TRL formulas in PyTorch, float64).")
    out("// Do not edit by hand: re-run `/usr/bin/python3 tests/training/dpo_reference.py` and paste its")
    out("// output here. The CTest dpo_reference_constants fails when this block and the script disagree.")
    out(f"constexpr double kPolicyChosen[] = {fmt(POLICY_CHOSEN)};")
    out(f"constexpr double kPolicyRejected[] = {fmt(POLICY_REJECTED)};")
    out(f"constexpr double kReferenceChosen[] = {fmt(REFERENCE_CHOSEN)};")
    out(f"constexpr double kReferenceRejected[] = {fmt(REFERENCE_REJECTED)};")
    out(f"constexpr double kChosenLengths[] = {fmt(CHOSEN_LENGTHS)};")
    out(f"constexpr double kRejectedLengths[] = {fmt(REJECTED_LENGTHS)};")
    out(f"constexpr double kChosenNll = {fmt(CHOSEN_NLL)};")
    out("constexpr ReferenceCase kReferenceCases[] = {")
    for loss_types, weights, beta, smoothing, reference_free in CASES:
        policy_chosen = torch.tensor(POLICY_CHOSEN, requires_grad=True)
        policy_rejected = torch.tensor(POLICY_REJECTED, requires_grad=True)
        chosen_nll = torch.tensor(CHOSEN_NLL, requires_grad=True)
        loss, chosen_rewards, rejected_rewards, metrics = trl_preference_loss(
            loss_types, weights, beta, smoothing, reference_free, (policy_chosen, policy_rejected, chosen_nll)
        )
        loss.backward()
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in (policy_chosen, policy_rejected, chosen_nll)]
        padded_types = loss_types + [""] * (3 - len(loss_types))
        padded_weights = weights + [0.0] * (3 - len(weights))
        out(
            f"    {{{len(loss_types)}, {fmt(padded_types)}, {fmt(padded_weights)}, {fmt(beta)}, {fmt(smoothing)}, "
            f"{fmt(reference_free)},"
        )
        out(f"     {fmt(loss.item())}, {fmt(grads[0].tolist())}, {fmt(grads[1].tolist())}, {fmt(grads[2].item())},")
        out(f"     {fmt(chosen_rewards.tolist())}, {fmt(rejected_rewards.tolist())},")
        out(f"     {fmt(metrics)}}},")
    out("};")

    logits = torch.tensor(LOGITS, requires_grad=True)
    labels = torch.tensor(LABELS)
    mask = torch.tensor(MASK).bool()
    # TRL's SFT term: F.cross_entropy over the masked positions.
    sft = F.cross_entropy(logits[mask], labels[mask])
    sft.backward()
    # TRL's selective_log_softmax, zeroed outside the mask, then summed / averaged per sequence.
    safe_labels = labels.masked_fill(~mask, 0)
    per_token = torch.gather(logits.detach().log_softmax(-1), 2, safe_labels.unsqueeze(2)).squeeze(2)
    per_token = per_token.masked_fill(~mask, 0.0)
    sums = per_token.sum(1)
    means = sums / mask.sum(1).clamp(min=1)
    correct = (logits.detach().argmax(-1) == labels) & mask
    accuracy = (correct.sum() / mask.sum()).item()
    out(f"constexpr double kLogits[2][3][5] = {fmt(LOGITS)};")
    out(f"constexpr int64_t kLabels[2][3] = {{{{{', '.join(map(str, LABELS[0]))}}}, {{{', '.join(map(str, LABELS[1]))}}}}};")
    out(f"constexpr double kMask[2][3] = {fmt(MASK)};")
    out(f"constexpr double kTokenLogps[2][3] = {fmt(per_token.tolist())};")
    out(f"constexpr double kSequenceSums[] = {fmt(sums.tolist())};")
    out(f"constexpr double kSequenceMeans[] = {fmt(means.tolist())};")
    out(f"constexpr double kSftLoss = {fmt(sft.item())};")
    out(f"constexpr double kSftLossGrad[2][3][5] = {fmt(logits.grad.tolist())};")
    out(f"constexpr double kMeanTokenAccuracy = {fmt(accuracy)};")
    out("// END GENERATED")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(generate, __doc__)
