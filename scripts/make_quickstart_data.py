#!/usr/bin/env python3
"""Writes the quick start's data (configs/quickstart/*.jsonl and corpus.txt).

The task is single-digit addition ("3+4=" -> "7"). The SFT set imitates noisy
demonstrations: every question appears once with its right answer and once
with a wrong one, so supervised fine-tuning teaches the format but not which
answer is right. The DPO set pairs the right answer (chosen) with wrong ones
(rejected). The held-out set pairs every question's right answer with the
wrong answer the SFT demonstrations taught for it, a pair DPO never sees: the
SFT model cannot tell the two apart (about chance), and what the set
measures after DPO is whether the model now prefers the right answer.

Deterministic (fixed seed); the files are committed, and this script
regenerates them: /usr/bin/python3 scripts/make_quickstart_data.py
"""
import json
import os
import random

OUT = os.path.join(os.path.dirname(__file__), "..", "configs", "quickstart")


def write(name, records):
    with open(os.path.join(OUT, name), "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def main():
    rng = random.Random(1234)
    sft, train_pairs, heldout_pairs, corpus = [], [], [], []
    for a in range(10):
        for b in range(10):
            prompt, answer = f"{a}+{b}=", a + b
            wrong = [w for w in range(19) if w != answer]
            rng.shuffle(wrong)
            sft_wrong, dpo_wrong = wrong[0], wrong[1:4]
            sft.append({"prompt": prompt, "completion": str(answer)})
            sft.append({"prompt": prompt, "completion": str(sft_wrong)})
            for w in dpo_wrong:
                train_pairs.append({"prompt": prompt, "chosen": str(answer), "rejected": str(w)})
            heldout_pairs.append({"prompt": prompt, "chosen": str(answer), "rejected": str(sft_wrong)})
            corpus.append(f"{prompt}{answer}")
    rng.shuffle(sft)
    rng.shuffle(train_pairs)
    os.makedirs(OUT, exist_ok=True)
    write("sft.jsonl", sft)
    write("prefs_train.jsonl", train_pairs)
    write("prefs_heldout.jsonl", heldout_pairs)
    with open(os.path.join(OUT, "corpus.txt"), "w") as f:
        f.write("\n".join(corpus) + "\n")

    questions = [(a, b) for a in range(10) for b in range(10)]
    heldout = set(random.Random(4321).sample(questions, 20))
    rl = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in questions]
    write("rl_train.jsonl", [r for r, q in zip(rl, questions) if q not in heldout])
    write("rl_heldout.jsonl", [r for r, q in zip(rl, questions) if q in heldout])


if __name__ == "__main__":
    main()
