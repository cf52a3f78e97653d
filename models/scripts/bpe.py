#!/usr/bin/env python3
"""A small byte-level BPE trainer and encoder that writes a Hugging Face tokenizer.json.

The Hugging Face `tokenizers` package is not available here, so this file implements the
same model: GPT-2 style byte-level pre-tokenization (ByteLevel with its regex), BPE merges
applied by rank. Digits are never merged, so a number is encoded digit by digit, which makes
pass codes easy to copy for the retrieval task.

  /usr/bin/python3 bpe.py train --text ../work/train.txt --vocab 4096 --out ../kvq-llama/tokenizer.json
"""
import argparse
import collections
import heapq
import json
import sys

import regex

EOS = "<|endoftext|>"
PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def byte_alphabet():
    """Maps every byte to a printable unicode character (the GPT-2 byte-level alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = byte_alphabet()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def pre_tokens(text):
    for piece in PATTERN.findall(text):
        yield "".join(BYTE_TO_CHAR[b] for b in piece.encode("utf-8"))


def has_digit(sym):
    return any(CHAR_TO_BYTE.get(c, 0) in range(0x30, 0x3A) for c in sym)


def train(text, vocab_size):
    words = collections.Counter(pre_tokens(text))
    seqs = [list(w) for w in words]
    freqs = list(words.values())
    pair_count = collections.Counter()
    pair_words = collections.defaultdict(set)
    for i, s in enumerate(seqs):
        for a, b in zip(s, s[1:]):
            pair_count[(a, b)] += freqs[i]
            pair_words[(a, b)].add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    n_merges = vocab_size - 257
    while len(merges) < n_merges and heap:
        negc, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or -negc <= 0:
            continue
        if has_digit(pair[0]) or has_digit(pair[1]):
            pair_count[pair] = 0
            continue
        merges.append(pair)
        new = pair[0] + pair[1]
        touched = collections.Counter()
        for i in list(pair_words[pair]):
            s = seqs[i]
            f = freqs[i]
            for a, b in zip(s, s[1:]):
                pair_count[(a, b)] -= f
                touched[(a, b)] += 0
            out, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == pair[0] and s[j + 1] == pair[1]:
                    out.append(new)
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            seqs[i] = out
            for a, b in zip(out, out[1:]):
                pair_count[(a, b)] += f
                pair_words[(a, b)].add(i)
                touched[(a, b)] += 0
        pair_count[pair] = 0
        for p in touched:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
        if len(merges) % 500 == 0:
            print(f"  {len(merges)} merges", file=sys.stderr)
    return merges


def tokenizer_json(merges):
    vocab = {EOS: 0}
    for b in range(256):
        vocab[BYTE_TO_CHAR[b]] = 1 + b
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": 0, "content": EOS, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }


class Encoder:
    """Encodes text exactly as Hugging Face tokenizers does for the tokenizer.json above."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        self.vocab = tj["model"]["vocab"]
        self.inv = {i: t for t, i in self.vocab.items()}
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(tj["model"]["merges"])}
        self.cache = {}

    def _bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        s = list(word)
        while len(s) > 1:
            best, bi = None, -1
            for i in range(len(s) - 1):
                r = self.ranks.get((s[i], s[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            pair = (s[bi], s[bi + 1])
            out, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == pair[0] and s[j + 1] == pair[1]:
                    out.append(pair[0] + pair[1])
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            s = out
        ids = [self.vocab[t] for t in s]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        ids = []
        parts = text.split(EOS)
        for k, part in enumerate(parts):
            if k > 0:
                ids.append(0)
            for w in pre_tokens(part):
                ids.extend(self._bpe(w))
        return ids

    def decode(self, ids):
        chars = "".join(self.inv[i] for i in ids if i != 0)
        return bytes(CHAR_TO_BYTE[c] for c in chars).decode("utf-8", errors="replace")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--text", required=True)
    t.add_argument("--vocab", type=int, default=4096)
    t.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    merges = train(text, args.vocab)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(merges), f, ensure_ascii=False)
    enc = Encoder(args.out)
    sample = "In the beginning God created the heaven and the earth. The pass code is 48213."
    ids = enc.encode(sample)
    assert enc.decode(ids) == sample
    print(f"vocab {len(enc.vocab)}; sample -> {len(ids)} tokens", file=sys.stderr)


if __name__ == "__main__":
    main()
