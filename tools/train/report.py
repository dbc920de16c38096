"""Prints the HGF table of docs/demo-model.md from the three runs' result.json files.

Usage: python report.py WORK_DIR
"""
import json
import sys

NAMES = {"float": "full precision (f32)", "ternary": "ternary (BitNet b1.58)",
         "hgf": "ternary + HGF (rank 8, scalar gate)"}


def main():
    runs = {m: json.load(open(f"{sys.argv[1]}/{m}/result.json")) for m in NAMES}
    print("| variant | parameters | steps | tokens seen | validation loss | train time |")
    print("|---|---|---|---|---|---|")
    for mode, r in runs.items():
        print(f"| {NAMES[mode]} | {r['parameters']:,} | {r['steps']} | {r['train_tokens_seen']:,} | "
              f"{r['valid_loss']:.4f} | {r['train_seconds']} s |")
    gap = runs["ternary"]["valid_loss"] - runs["float"]["valid_loss"]
    recovered = runs["ternary"]["valid_loss"] - runs["hgf"]["valid_loss"]
    print(f"\nternary-vs-float gap {gap:.4f} nats; HGF recovers {recovered:.4f} nats = {100 * recovered / gap:.1f}% of it")


if __name__ == "__main__":
    main()
