#!/usr/bin/env python3
"""Writes configs/data/recsys_sample.tsv: a small click log for the recsys
workload, drawn from a planted model so that it can be learned.

Planted model: every user and every item belongs to one of GENRES genres; a
user clicks an item of their own genre with probability P_SAME and any other
item with probability P_OTHER. Candidates follow a Zipf-like popularity law;
a user's history is their earlier clicks (popular items the user clicked,
drawn the same way), 0 to MAX_HISTORY of them.

Format (what `embtrain train --recsys.data=...` reads), one sample a line:
    user<TAB>item item ...<TAB>candidate<TAB>label
users 0..USERS-1, items 1..ITEMS, label 0/1, history possibly empty.

Only the Python standard library is used, and the seed is fixed, so the file
is the same on every run:  python3 configs/data/make_recsys_sample.py
"""
import argparse
import os
import random

USERS = 40
ITEMS = 60
GENRES = 3
P_SAME = 0.9
P_OTHER = 0.1
MAX_HISTORY = 8
SAMPLES = 600
SEED = 20240611


def auc(scores, labels):
    """Exact ROC AUC, ties counting one half (what the workload reports)."""
    pairs = [(s, y) for s, y in zip(scores, labels)]
    pos = [s for s, y in pairs if y == 1]
    neg = [s for s, y in pairs if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(here, "recsys_sample.tsv"))
    args = parser.parse_args()

    rng = random.Random(SEED)
    user_genre = [rng.randrange(GENRES) for _ in range(USERS)]
    item_genre = [None] + [rng.randrange(GENRES) for _ in range(ITEMS)]  # item 0 is padding
    popularity = [0.0] + [1.0 / (rank ** 0.8) for rank in range(1, ITEMS + 1)]
    user_weight = [1.0 / ((u + 1) ** 0.5) for u in range(USERS)]

    def click_probability(user, item):
        return P_SAME if user_genre[user] == item_genre[item] else P_OTHER

    def popular_item():
        return rng.choices(range(ITEMS + 1), weights=popularity)[0]

    lines, truth, labels = [], [], []
    for _ in range(SAMPLES):
        user = rng.choices(range(USERS), weights=user_weight)[0]
        history = []
        for _ in range(rng.randint(0, MAX_HISTORY)):
            for _try in range(8):
                item = popular_item()
                if rng.random() < click_probability(user, item):
                    history.append(item)
                    break
        candidate = popular_item()
        p = click_probability(user, candidate)
        label = 1 if rng.random() < p else 0
        lines.append("%d\t%s\t%d\t%d" % (user, " ".join(map(str, history)), candidate, label))
        truth.append(p)
        labels.append(label)

    held_out = SAMPLES // 5
    reference = auc(truth[-held_out:], labels[-held_out:])
    with open(args.out, "w") as f:
        f.write("# recsys click log: user<TAB>history items<TAB>candidate<TAB>label\n")
        f.write("# written by configs/data/make_recsys_sample.py (planted genre model, seed %d)\n"
                % SEED)
        f.write("# users 0..%d (recsys.users = %d), items 1..%d (recsys.items = %d)\n"
                % (USERS - 1, USERS, ITEMS, ITEMS))
        f.write("# the planted model's AUC on the last %d lines: %.3f\n" % (held_out, reference))
        f.write("\n")
        for line in lines:
            f.write(line + "\n")
    print("wrote %s: %d samples, click rate %.3f, planted AUC on the last %d: %.3f"
          % (args.out, SAMPLES, sum(labels) / SAMPLES, held_out, reference))


if __name__ == "__main__":
    main()
