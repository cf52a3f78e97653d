#!/usr/bin/env python3
"""Builds the training and held-out text for the bundled model from Debian packages.

Sources (installed with apt-get, see models/README.md):
  bible-kjv-text  King James Version (public domain), read with the `bible` command.
  python3.11-doc  Python documentation reST sources (PSF licence).
Writes models/work/train.txt (not committed) and models/data/heldout.txt (committed).
Held out, never trained on: the KJV books of Hebrews and Revelation.
"""
import glob
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
WORK = os.path.join(MODELS, "work")
HELDOUT_BOOKS = ("Heb", "Rev")


def kjv_chapters():
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], check=True,
                         capture_output=True, text=True).stdout
    chapters = []  # (book abbreviation, chapter number, [verses])
    for line in out.splitlines():
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$", line)
        if not m:
            continue
        book, chap, text = m.group(1), int(m.group(2)), m.group(4).strip()
        if not chapters or chapters[-1][0] != book or chapters[-1][1] != chap:
            chapters.append((book, chap, []))
        chapters[-1][2].append(text)
    return chapters


def python_docs():
    paths = sorted(glob.glob("/usr/share/doc/python3.11/html/_sources/**/*.txt", recursive=True))
    texts = []
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            t = f.read()
        # keep prose and code; drop overly long tables and directive noise lines
        lines = [l for l in t.splitlines() if not re.match(r"^\s*(\.\. |:[a-z]+:)", l)]
        texts.append("\n".join(lines))
    return texts


def main():
    os.makedirs(WORK, exist_ok=True)
    chapters = kjv_chapters()
    train, held = [], []
    for book, chap, verses in chapters:
        block = "\n".join(verses) + "\n"
        (held if book in HELDOUT_BOOKS else train).append(block)
    docs = python_docs()
    with open(os.path.join(WORK, "train.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(train))
        f.write("\n")
        f.write("\n".join(docs))
    with open(os.path.join(MODELS, "data", "heldout.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(held))
    with open(os.path.join(WORK, "kjv_train.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(train))
    print(f"chapters: {len(chapters)} (held out {len(held)}), python doc files: {len(docs)}")
    for n in ("train.txt", "kjv_train.txt"):
        print(n, os.path.getsize(os.path.join(WORK, n)), "bytes")
    print("heldout.txt", os.path.getsize(os.path.join(MODELS, "data", "heldout.txt")), "bytes")


if __name__ == "__main__":
    sys.exit(main())
