"""Builds the demo model's English corpus from two Debian packages, offline, deterministically.

- WordNet 3.0 (`wordnet-base`, Princeton's WordNet 3.0 license: use, copy, modify and distribute for any purpose with
  the copyright notice kept): one document per synset, "words (part of speech): gloss", where the gloss holds the
  definition and often quoted example sentences.
- fortune-mod's default cookie files (`fortunes`, BSD licence per its Debian copyright file), minus ASCII art: one
  document per quotation.

Usage: python corpus.py OUT_DIR   (needs `apt-get download`; writes train.txt, valid.txt and sources.json)
Documents are shuffled with a fixed seed and split 98/2; each document is one line ending in "\n", and quotations keep
their line breaks escaped as the two characters " / " so one line is one document.
"""
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile

PACKAGES = ["wordnet-base", "fortunes"]
POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
SKIP_FORTUNES = {"ascii-art"}
MAX_FORTUNE_CHARS = 600
VALID_FRACTION, SEED = 0.02, 1234


def unpack(workdir):
    """Downloads and unpacks the packages; returns the extracted root and each package's exact version."""
    versions = {}
    for pkg in PACKAGES:
        subprocess.run(["apt-get", "download", pkg], cwd=workdir, check=True, capture_output=True)
    for deb in sorted(os.listdir(workdir)):
        if deb.endswith(".deb"):
            path = os.path.join(workdir, deb)
            subprocess.run(["dpkg-deb", "-x", path, os.path.join(workdir, "root")], check=True)
            fields = subprocess.run(["dpkg-deb", "-f", path, "Package", "Version"], check=True,
                                    capture_output=True, text=True).stdout.split("\n")
            versions[fields[0].split(": ")[1]] = fields[1].split(": ")[1]
    return os.path.join(workdir, "root"), versions


def wordnet_documents(root):
    docs = []
    for part in ["noun", "verb", "adj", "adv"]:
        with open(os.path.join(root, "usr/share/wordnet", f"data.{part}"), encoding="latin-1") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:
                    continue  # the license header
                head, gloss = line.rstrip("\n").split(" | ", 1)
                fields = head.split()
                count = int(fields[3], 16)
                words = []
                for w in fields[4:4 + 2 * count:2]:
                    w = w.split("(")[0].replace("_", " ")
                    if w not in words:
                        words.append(w)
                docs.append(f"{', '.join(words[:3])} ({POS[fields[2]]}): {gloss.strip()}")
    return docs


def fortune_documents(root):
    docs = []
    base = os.path.join(root, "usr/share/games/fortunes")
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        if "." in name or name in SKIP_FORTUNES or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for cookie in f.read().split("\n%\n"):
                text = " / ".join(l.strip() for l in cookie.strip("%\n").split("\n") if l.strip())
                if 0 < len(text) <= MAX_FORTUNE_CHARS and text.isascii():
                    docs.append(text)
    return docs


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        root, versions = unpack(work)
        wordnet, fortunes = wordnet_documents(root), fortune_documents(root)
    docs = wordnet + fortunes
    random.Random(SEED).shuffle(docs)
    n_valid = int(len(docs) * VALID_FRACTION)
    splits = {"valid": docs[:n_valid], "train": docs[n_valid:]}
    info = {"packages": versions, "documents": {"wordnet": len(wordnet), "fortunes": len(fortunes)}, "splits": {}}
    for split, items in splits.items():
        text = "".join(d + "\n" for d in items)
        with open(os.path.join(out, f"{split}.txt"), "w") as f:
            f.write(text)
        info["splits"][split] = {"documents": len(items), "bytes": len(text.encode()),
                                 "sha256": hashlib.sha256(text.encode()).hexdigest()}
    with open(os.path.join(out, "sources.json"), "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
