#!/usr/bin/python3
"""Inputs of bench/dpo: pre-tokenized preference pairs and the model's special ids.

    prepare.py --model DIR --data OUT.jsonl [--pairs 256] [--prompt 64]
               [--min-completion 48] [--max-completion 64] [--seed 0]

Writes OUT.jsonl with {"prompt_ids", "chosen_ids", "rejected_ids"} records
of random content ids (fixed seed): each prompt is BOS followed by
`prompt - 1` ids, each completion `min..max` tokens ending in EOS, so
batches need padding and the loss masks differ row by row. A model made by
`alignkit model init --vocab-size N` names no special tokens, and DPO needs
a padding id: the model's config.json gets bos 1, eos 2 and pad 0 (the
vocabulary is random ids, so any three ids would do).
"""
import argparse
import json
import os
import random

BOS, EOS, PAD = 1, 2, 0
FIRST_CONTENT_ID = 3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--min-completion", type=int, default=48)
    parser.add_argument("--max-completion", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config_path = os.path.join(args.model, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config.update({"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD})
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)

    vocab = config["vocab_size"]
    generator = random.Random(args.seed)

    def ids(count):
        return [generator.randrange(FIRST_CONTENT_ID, vocab) for _ in range(count)]

    def completion():
        return ids(generator.randint(args.min_completion, args.max_completion) - 1) + [EOS]

    with open(args.data, "w") as f:
        for _ in range(args.pairs):
            record = {"prompt_ids": [BOS] + ids(args.prompt - 1), "chosen_ids": completion(), "rejected_ids": completion()}
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
