#!/usr/bin/env python3
"""Converts a bundled Llama-architecture model (models/kvq-llama: model.onnx + config.json +
tokenizer.json) to GGUF for llama.cpp, so that kvquant and llama.cpp run the same weights.

  PYTHONPATH=LLAMA_CPP/gguf-py /usr/bin/python3 models/scripts/onnx_to_gguf.py \
      --model models/kvq-llama --out /tmp/kvq-llama-f32.gguf [--context 65536] [--type f32|f16]

The `gguf` package is imported from a llama.cpp source tree (PYTHONPATH); nothing of it is
copied here. Weights are read from the ONNX initializers; the export lost the linear layers'
parameter names, so each MatMul weight is identified by its role in the graph (checked, not
assumed from order): k and v reach present.N.key / present.N.value, q does neither, o's input
comes from the attention output, gate feeds a Sigmoid (SiLU), down has the MLP width as input.

Rotary embedding: the export uses the half-split form (rotate_half, pairs (i, i + d/2));
llama.cpp's llama architecture rotates adjacent pairs (2i, 2i + 1), so the rows of the q and k
projections are permuted per head to match (scores are unchanged: the permutation is the same
for q and k and rotary acts on the same frequency pairs).
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

try:
    import gguf
except ImportError:
    sys.exit("onnx_to_gguf: the gguf package is needed: PYTHONPATH=<llama.cpp>/gguf-py /usr/bin/python3 ...")


def consumers(graph):
    c = {}
    for n in graph.node:
        for i in n.input:
            c.setdefault(i, []).append(n)
    return c


def reaches(name, cons, outputs, targets, depth=12):
    """Graph outputs in `targets` reachable from tensor `name` within `depth` nodes."""
    found, frontier, seen = set(), [name], set()
    for _ in range(depth):
        nxt = []
        for t in frontier:
            if t in outputs and t in targets:
                found.add(t)
            for n in cons.get(t, []):
                if id(n) in seen:
                    continue
                seen.add(id(n))
                nxt.extend(n.output)
        frontier = nxt
    for t in frontier:
        if t in targets:
            found.add(t)
    return found


def permute_rotary(w, heads, hd):
    """Rows [heads*hd, in] from half-split pairs (i, i+hd/2) to adjacent pairs (2i, 2i+1)."""
    return w.reshape(heads, 2, hd // 2, w.shape[1]).swapaxes(1, 2).reshape(heads * hd, w.shape[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="folder with model.onnx, config.json, tokenizer.json")
    ap.add_argument("--out", required=True, help="GGUF file to write")
    ap.add_argument("--context", type=int, default=0, help="context length to declare (default: the config's)")
    ap.add_argument("--type", choices=["f32", "f16"], default="f32", help="weight type of the matrices")
    a = ap.parse_args()

    cfg = json.load(open(os.path.join(a.model, "config.json")))
    if cfg.get("model_type") != "llama":
        sys.exit(f"onnx_to_gguf: only model_type llama is supported, got {cfg.get('model_type')}")
    tok = json.load(open(os.path.join(a.model, "tokenizer.json")))
    m = onnx.load(os.path.join(a.model, "model.onnx"))
    g = m.graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    cons = consumers(g)
    outputs = {o.name for o in g.output}

    L, H, KV = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, hidden, inter, vocab = cfg["head_dim"], cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    mats = [n for n in g.node if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in init]
    head = [n for n in mats if init[n.input[1]].shape == (hidden, vocab)]
    body = [n for n in mats if n not in head]
    if len(body) != 7 * L or len(head) > 1:
        sys.exit(f"onnx_to_gguf: expected 7 weight MatMuls per layer and at most one head, found {len(body)} and {len(head)}")

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(os.path.basename(os.path.normpath(a.model)))
    w.add_context_length(a.context or cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(L)
    w.add_feed_forward_length(inter)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if a.type == "f32" else gguf.LlamaFileType.MOSTLY_F16)

    # Tokenizer: byte-level BPE with the GPT-2 pre-tokenizer regex.
    model = tok["model"]
    if model.get("type") != "BPE" or tok["pre_tokenizer"].get("type") != "ByteLevel":
        sys.exit("onnx_to_gguf: only byte-level BPE tokenizers are supported")
    ids = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    if [i for _, i in ids] != list(range(len(ids))) or len(ids) != vocab:
        sys.exit("onnx_to_gguf: tokenizer ids are not 0..vocab-1")
    special = {t["id"] for t in tok.get("added_tokens", []) if t.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list([t for t, _ in ids])
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for _, i in ids])
    w.add_token_merges(merges)
    w.add_bos_token_id(int(cfg.get("bos_token_id", 0)))
    w.add_eos_token_id(int(cfg.get("eos_token_id", 0)))
    w.add_add_bos_token(False)

    def mat(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        return x.astype(np.float16) if a.type == "f16" else x

    emb = init["net.embed_tokens.weight"].astype(np.float32)
    w.add_tensor("token_embd.weight", mat(emb))
    if head:
        lm = init[head[0].input[1]].T
        if not (cfg.get("tie_word_embeddings") and np.array_equal(lm, emb)):
            w.add_tensor("output.weight", mat(lm))
    w.add_tensor("output_norm.weight", init["net.norm.weight"].astype(np.float32))

    for layer in range(L):
        nodes = body[7 * layer: 7 * layer + 7]
        role = {}
        for n in nodes:
            W = init[n.input[1]]
            out = n.output[0]
            if W.shape == (inter, hidden):
                role["down"] = W
            elif W.shape == (hidden, inter):
                feeds_sigmoid = any(c.op_type == "Sigmoid" for c in cons.get(out, []))
                role["gate" if feeds_sigmoid else "up"] = W
            else:
                hit = reaches(out, cons, outputs, {f"present.{layer}.key", f"present.{layer}.value"})
                if hit == {f"present.{layer}.key"}:
                    role["k"] = W
                elif hit == {f"present.{layer}.value"}:
                    role["v"] = W
                elif W.shape == (H * hd, hidden) and "q" in role:
                    role["o"] = W
                elif W.shape == (hidden, H * hd) and "q" not in role:
                    role["q"] = W
                else:
                    sys.exit(f"onnx_to_gguf: layer {layer}: cannot tell the role of MatMul {n.name} {W.shape}")
        if set(role) != {"q", "k", "v", "o", "gate", "up", "down"}:
            sys.exit(f"onnx_to_gguf: layer {layer}: found roles {sorted(role)}")
        p = f"blk.{layer}."
        w.add_tensor(p + "attn_norm.weight", init[f"net.layers.{layer}.input_layernorm.weight"].astype(np.float32))
        w.add_tensor(p + "ffn_norm.weight", init[f"net.layers.{layer}.post_attention_layernorm.weight"].astype(np.float32))
        # ONNX MatMul weights are [in, out]; GGUF wants nn.Linear's [out, in]
        w.add_tensor(p + "attn_q.weight", mat(permute_rotary(role["q"].T, H, hd)))
        w.add_tensor(p + "attn_k.weight", mat(permute_rotary(role["k"].T, KV, hd)))
        w.add_tensor(p + "attn_v.weight", mat(role["v"].T))
        w.add_tensor(p + "attn_output.weight", mat(role["o"].T))
        w.add_tensor(p + "ffn_gate.weight", mat(role["gate"].T))
        w.add_tensor(p + "ffn_up.weight", mat(role["up"].T))
        w.add_tensor(p + "ffn_down.weight", mat(role["down"].T))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(a.out)


if __name__ == "__main__":
    main()
