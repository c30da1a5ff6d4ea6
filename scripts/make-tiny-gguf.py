#!/usr/bin/env python3
"""Writes tiny-random-llama.gguf: a tiny, RANDOMLY INITIALISED llama model in GGUF.

It has never been trained: what it generates is nonsense (random tokens). It exists so the
local cluster and the tests can run a real inference engine (llama.cpp, through
llama-cpp-python's OpenAI-compatible server) on a real model file that the project makes
itself, without downloading weights. Its answers' shape is real; their text means nothing.

The architecture is llama.cpp's `llama`: 2 blocks, hidden size 64, 4 attention heads (2 for
keys and values, grouped-query attention), feed-forward 128, RoPE over the whole head, RMS
norm, a separate output matrix; every tensor F32 (about 0.5 MB in all). The tokenizer is a
SentencePiece-style one (`tokenizer.ggml.model = llama`): `<unk>`, `<s>`, `</s>`, the 256
byte-fallback pieces `<0x00>`..`<0xFF>` (so any text tokenizes), printable ASCII characters,
and `▁`+letter pieces, with scores that prefer the longer piece. A small chat template
(`tokenizer.chat_template`) lets `/v1/chat/completions` format messages.

The same seed gives the same file, byte for byte (so its OCI digest is stable): weights are
drawn from numpy's PCG64 with that seed, and nothing time-dependent is written.

Usage: make-tiny-gguf.py [--seed N] [--output PATH]   (needs PyPI's `gguf` and numpy)
"""

import argparse
import hashlib
import os
import string
import sys

import numpy as np
from gguf import GGUFWriter, TokenType

NAME = "tiny-random-llama"
N_LAYERS = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
CONTEXT = 2048
RMS_EPS = 1e-5
ROPE_BASE = 10000.0

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def vocabulary():
    """Tokens, scores and types of the SentencePiece-style vocabulary."""
    tokens, scores, types = [], [], []

    def add(piece, score, kind):
        tokens.append(piece)
        scores.append(score)
        types.append(kind)

    add("<unk>", 0.0, TokenType.UNKNOWN)
    add("<s>", 0.0, TokenType.CONTROL)
    add("</s>", 0.0, TokenType.CONTROL)
    for byte in range(256):
        add(f"<0x{byte:02X}>", 0.0, TokenType.BYTE)
    # Single characters score lower than the two-character `▁x` pieces, so a word's first
    # letter merges with the space before it, as SentencePiece's BPE does.
    singles = ["\u2581"] + [c for c in string.printable if c.isprintable() and c != " "]
    for c in singles:
        add(c, -2.0, TokenType.NORMAL)
    for c in string.ascii_letters:
        add("\u2581" + c, -1.0, TokenType.NORMAL)
    return tokens, scores, types


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--output", default=f"{NAME}.gguf", help=f"file to write (default {NAME}.gguf)")
    args = parser.parse_args()

    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD
    rng = np.random.Generator(np.random.PCG64(args.seed))

    def matrix(rows, cols):
        # numpy shape (rows, cols) is GGUF's [cols, rows]: ne[0] = cols, the input size.
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)

    def ones(n):
        return np.ones((n,), dtype=np.float32)

    tmp = args.output + ".partial"
    writer = GGUFWriter(tmp, arch="llama")
    writer.add_name(NAME)
    writer.add_description("randomly initialised, never trained: generates nonsense (gpuplane test model)")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(ROPE_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", matrix(n_vocab, N_EMBD))
    for i in range(N_LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones(N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_q.weight", matrix(N_HEAD * head_dim, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_k.weight", matrix(N_HEAD_KV * head_dim, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_v.weight", matrix(N_HEAD_KV * head_dim, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_output.weight", matrix(N_EMBD, N_HEAD * head_dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones(N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", ones(N_EMBD))
    writer.add_tensor("output.weight", matrix(n_vocab, N_EMBD))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, args.output)

    digest = hashlib.sha256()
    with open(args.output, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    print(f"{args.output}: {os.path.getsize(args.output)} bytes, sha256 {digest.hexdigest()}, "
          f"{n_vocab} tokens, seed {args.seed} (random weights: generates nonsense)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
