#!/usr/bin/env python3
"""Makes a Mistral-7B-Instruct-v0.2-shaped model in safetensors format and
loads it the way a safetensors loader under vLLM does (mmap, header, then
tensor by tensor through the mapping). Standard library only.

  generate OUT_DIR [--layers N] [--shard-max-gib G] [--seed S]
  load MODEL_DIR [--verify] [--json] [--order file|name] [--evict-cache]
  checksums MODEL_DIR [--json]

The file format (https://github.com/huggingface/safetensors):
  8 bytes   N, unsigned little-endian
  N bytes   UTF-8 JSON header, padded with spaces to a multiple of 8:
            {"__metadata__":{"format":"pt"},
             "<name>":{"dtype":"BF16","shape":[...],"data_offsets":[b,e]},...}
            offsets are relative to the first byte after the header
  rest      the tensor data, packed: sorted by begin offset the tensors start
            at 0, each begins where the previous ends, and the last ends at
            the end of the file.

What generate writes, and why:
  - Tensors are split into shards in model order (embed, layers 0..N-1,
    norm, lm_head), greedily, as transformers' save_pretrained does. Inside a
    shard the data is in name order, because the safetensors writer sorts by
    (dtype, name): real Hugging Face shards look like that, and so vLLM's
    `for name in safe_open(f).keys()` loop (keys() is sorted) reads each
    shard front to back. --shard-max-gib 4.656613 (= 5e9 bytes, HF's "5GB")
    with --layers 32 gives the real Mistral-7B-Instruct-v0.2 shard sizes
    4943162336, 4999819336 and 4540516344 bytes.
  - Values: random, seeded per tensor name; by default with the BF16
    exponent bits limited so every weight is finite (see BF16Values).
  - tokenizer.json is a small stand-in (byte-level BPE), not Mistral's.

How load reads: zlib.crc32 over each tensor's memoryview slice of the
mapping, so every byte goes through the page-fault path as a real loader's
copy would; crc32 runs at about 4 GB/s, so the loader is not the bottleneck
(warm page cache on the dev VM: ~4 GB/s). A read error under a mapping is a
SIGBUS that kills the process, as it would kill a real loader.

Exit codes: 0 ok; 1 --verify found a CRC mismatch; 2 a file is missing or
malformed (or bad usage).
"""
import argparse
import json
import mmap
import os
import queue
import random
import re
import struct
import sys
import threading
import time
import zlib

MIB = 1 << 20
GIB = 1 << 30
CHUNK = 8 * MIB             # generation chunk (small chunks keep the big-int buffers in the heap)
MAX_HEADER = 100_000_000    # the reference implementation's limit on N

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
CHECKSUMS_NAME = "nacre-checksums.json"
SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")

DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

# Mistral-7B-Instruct-v0.2
HIDDEN = 4096
INTERMEDIATE = 14336
VOCAB = 32000
HEADS = 32
KV_HEADS = 8
HEAD_DIM = HIDDEN // HEADS
KV_DIM = KV_HEADS * HEAD_DIM   # 1024


class FormatError(Exception):
    """A file is missing or malformed: exit 2."""


class Mismatch(Exception):
    """--verify found different bytes: exit 1."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# CRC-32 combination (zlib's crc32_combine, which Python's zlib does not
# expose): crc32(A + B) from crc32(A), crc32(B) and len(B). It lets the loader
# check whole-file CRCs from the per-tensor CRCs without a second pass.

def _gf2_times(mat, vec):
    s = 0
    i = 0
    while vec:
        if vec & 1:
            s ^= mat[i]
        vec >>= 1
        i += 1
    return s


def _gf2_square(mat):
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def _zero_byte_operators():
    op = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    for _ in range(3):
        op = _gf2_square(op)                         # -> one zero byte
    ops = [op]
    for _ in range(63):
        ops.append(_gf2_square(ops[-1]))             # 2^k zero bytes
    return ops


_ZERO_OPS = None


def crc32_combine(crc1, crc2, len2):
    global _ZERO_OPS
    if _ZERO_OPS is None:
        _ZERO_OPS = _zero_byte_operators()
    k = 0
    while len2:
        if len2 & 1:
            crc1 = _gf2_times(_ZERO_OPS[k], crc1)
        len2 >>= 1
        k += 1
    return crc1 ^ crc2


# --------------------------------------------------------------------------
# The model

def mistral_tensors(layers):
    """(name, shape) in model (state_dict) order."""
    out = [("model.embed_tokens.weight", [VOCAB, HIDDEN])]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", [HIDDEN, HIDDEN]),
            (p + "self_attn.k_proj.weight", [KV_DIM, HIDDEN]),
            (p + "self_attn.v_proj.weight", [KV_DIM, HIDDEN]),
            (p + "self_attn.o_proj.weight", [HIDDEN, HIDDEN]),
            (p + "mlp.gate_proj.weight", [INTERMEDIATE, HIDDEN]),
            (p + "mlp.up_proj.weight", [INTERMEDIATE, HIDDEN]),
            (p + "mlp.down_proj.weight", [HIDDEN, INTERMEDIATE]),
            (p + "input_layernorm.weight", [HIDDEN]),
            (p + "post_attention_layernorm.weight", [HIDDEN]),
        ]
    out += [("model.norm.weight", [HIDDEN]), ("lm_head.weight", [VOCAB, HIDDEN])]
    return out


def nbytes_of(dtype, shape):
    n = DTYPE_BITS[dtype]
    for d in shape:
        n *= d
    return n // 8


def build_header(entries):
    """entries: [(name, dtype, shape, begin, end)] in data order. Returns the
    8-byte length plus the space-padded JSON, as the reference writer does
    (compact JSON, __metadata__ first, padded to a multiple of 8)."""
    h = {"__metadata__": {"format": "pt"}}
    for name, dtype, shape, b, e in entries:
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}
    js = json.dumps(h, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    js += b" " * (-len(js) % 8)
    return struct.pack("<Q", len(js)) + js


def layout_shard(names_shapes):
    """Data order inside one shard: the reference writer (safetensors
    serialize / save_file) sorts by dtype alignment then name, so a real
    Hugging Face shard holds its tensors in name order. All are BF16 here."""
    entries = []
    off = 0
    for name, shape in sorted(names_shapes):
        n = nbytes_of("BF16", shape)
        entries.append((name, "BF16", shape, off, off + n))
        off += n
    return entries


def plan_shards(tensors, max_bytes):
    """Greedy split in model order, as transformers' save_pretrained does;
    a shard's whole file (length + header + data) stays <= max_bytes unless
    a single tensor is larger than that on its own."""
    shards = []
    cur = []
    for t in tensors:
        cand = cur + [t]
        ents = layout_shard(cand)
        size = len(build_header(ents)) + ents[-1][4]
        if cur and size > max_bytes:
            shards.append(cur)
            cur = [t]
        else:
            cur = cand
    if cur:
        shards.append(cur)
    for s in shards:
        ents = layout_shard(s)
        if len(build_header(ents)) + ents[-1][4] > max_bytes:
            log(f"[generate] warning: {s[0][0]} alone is larger than the shard limit")
    return shards


class BF16Values:
    """Random bytes for BF16 tensors, CHUNK at a time, from random.getrandbits
    (the same stream as randbytes; any chunking that is a multiple of 4 bytes
    gives the same bytes).

    finite: in every little-endian BF16 the sign, the 7 mantissa bits and the
    exponent's 2 low bits stay random and the exponent's 6 high bits are set
    to 011110, so the exponent is 120..123 and every weight is finite with
    magnitude in [2^-7, 2^-3), the scale of real weights. Done with one AND
    and one OR on the big integer, which is cheap next to drawing the bits.
    raw: plain random bytes (about 1 value in 256 is Inf or NaN)."""

    def __init__(self, kind):
        self.finite = kind == "finite"
        if self.finite:
            self.keep = int.from_bytes(b"\xff\x81" * (CHUNK // 2), "little")
            self.force = int.from_bytes(b"\x00\x3c" * (CHUNK // 2), "little")

    def make(self, rng, n):
        x = rng.getrandbits(8 * n)
        if self.finite:
            if n % 2:
                raise ValueError("BF16 data has an even length")
            force = self.force if n == CHUNK else self.force >> (8 * (CHUNK - n))
            x = (x & self.keep) | force
        return x.to_bytes(n, "little")


class ChunkWriter:
    """Writes chunks and CRCs them in a second thread (zlib.crc32 and write
    release the GIL), so drawing random bits overlaps both. crcs[key] is the
    running CRC32 of the chunks put under key."""

    def __init__(self, f):
        self.f = f
        self.q = queue.Queue(maxsize=2)
        self.crcs = {}
        self.err = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            key, buf = item
            if self.err is None:
                try:
                    self.crcs[key] = zlib.crc32(buf, self.crcs.get(key, 0))
                    self.f.write(buf)
                except BaseException as e:   # reported to the main thread
                    self.err = e

    def put(self, key, buf):
        if self.err is not None:
            raise self.err
        self.q.put((key, buf))

    def close(self):
        self.q.put(None)
        self.t.join()
        if self.err is not None:
            raise self.err


def config_json(layers):
    return {
        "architectures": ["MistralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 32768,
        "model_type": "mistral",
        "num_attention_heads": HEADS,
        "num_hidden_layers": layers,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.36.0",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "transformers_version": "4.36.0",
}

STANDIN_NOTE = ("<|nacre stand-in tokenizer: byte-level, 256 byte tokens + <unk> <s> </s>; "
                "NOT Mistral's tokenizer; written by bench/safetensors_model.py|>")

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% endif %}{% endfor %}")


def tokenizer_config_json():
    return {
        "_nacre_note": "Stand-in tokenizer (see tokenizer.json), not Mistral's: "
                       "the weights are random, only their shapes are Mistral-7B's.",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
        "chat_template": CHAT_TEMPLATE,
    }


def _bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
          + list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json():
    """A small but well-formed Hugging Face `tokenizers` file: byte-level BPE
    with no merges (each byte is one token), so a server can start and
    tokenize. The note is carried as an added special token, since the
    tokenizer.json schema has no free-text field."""
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials)}
    b2u = _bytes_to_unicode()
    for b in range(256):
        vocab[b2u[b]] = len(vocab)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(specials)]
    added.append({"id": len(vocab), "content": STANDIN_NOTE, "single_word": False,
                  "lstrip": False, "rstrip": False, "normalized": False, "special": True})
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                    "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }


# --------------------------------------------------------------------------
# generate

OWN_FIXED = {INDEX_NAME, SINGLE_NAME, CHECKSUMS_NAME, "config.json", "generation_config.json",
             "tokenizer.json", "tokenizer_config.json"}


def _is_own(name):
    base = name[:-len(".partial")] if name.endswith(".partial") else name
    return base in OWN_FIXED or bool(SHARD_RE.match(base))


def write_json(path, obj):
    data = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
    return data


def cmd_generate(a):
    if a.layers < 0:
        raise FormatError("--layers must be >= 0")
    if not a.shard_max_gib > 0:
        raise FormatError("--shard-max-gib must be > 0")
    out = a.out_dir
    os.makedirs(out, exist_ok=True)
    foreign = sorted(n for n in os.listdir(out) if not _is_own(n))
    if foreign:
        raise FormatError(f"{out} holds files this tool did not write ({', '.join(foreign[:5])}"
                          f"{'...' if len(foreign) > 5 else ''}); use an empty directory")
    for n in os.listdir(out):       # stale output of an earlier run (e.g. other shard count)
        os.unlink(os.path.join(out, n))

    tensors = mistral_tensors(a.layers)
    shards = plan_shards(tensors, int(a.shard_max_gib * GIB))
    nsh = len(shards)
    total = sum(nbytes_of("BF16", s) for _, s in tensors)
    log(f"[generate] Mistral-7B shape, {a.layers} layers, {len(tensors)} tensors, "
        f"{total / GIB:.3f} GiB of BF16 in {nsh} shard(s), seed {a.seed}, values {a.values}")

    values = BF16Values(a.values)
    weight_map = {}
    tensor_sums = {}
    file_sums = {}
    done = 0
    next_report = 512 * MIB
    t0 = time.perf_counter()
    for si, shard in enumerate(shards, 1):
        fname = f"model-{si:05d}-of-{nsh:05d}.safetensors"
        entries = layout_shard(shard)
        head = build_header(entries)
        part = os.path.join(out, fname + ".partial")
        ts = time.perf_counter()
        with open(part, "wb") as f:
            w = ChunkWriter(f)
            try:
                w.put(None, head)
                for name, _dtype, _shape, b, e in entries:
                    # one stream per tensor: its bytes depend on the seed and
                    # its name only, not on the layer count or the sharding
                    rng = random.Random(f"{a.seed}:{name}")
                    left = e - b
                    while left:
                        n = min(CHUNK, left)
                        w.put(name, values.make(rng, n))
                        left -= n
                        done += n
                        if done >= next_report:
                            el = time.perf_counter() - t0
                            log(f"[generate] {done / GIB:6.2f}/{total / GIB:.2f} GiB  "
                                f"{done / MIB / el:6.0f} MiB/s  {fname}  {name}")
                            next_report += 512 * MIB
            finally:
                w.close()
            if a.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(part, os.path.join(out, fname))
        fcrc = w.crcs[None]
        for name, _dtype, _shape, b, e in entries:
            tcrc = w.crcs.get(name, 0)
            fcrc = crc32_combine(fcrc, tcrc, e - b)
            tensor_sums[name] = {"file": fname, "bytes": e - b, "crc32": f"{tcrc:08x}"}
            weight_map[name] = fname
        size = len(head) + entries[-1][4]
        file_sums[fname] = {"bytes": size, "crc32": f"{fcrc:08x}"}
        el = time.perf_counter() - ts
        log(f"[generate] wrote {fname}: {size / GIB:.3f} GiB, {len(entries)} tensors, "
            f"header {len(head) - 8} B, {el:.1f} s")

    small = {
        INDEX_NAME: {"metadata": {"total_size": total},
                     "weight_map": {k: weight_map[k] for k in sorted(weight_map)}},
        "config.json": config_json(a.layers),
        "generation_config.json": GENERATION_CONFIG,
        "tokenizer_config.json": tokenizer_config_json(),
        "tokenizer.json": tokenizer_json(),
    }
    for name, obj in small.items():
        data = write_json(os.path.join(out, name), obj)
        file_sums[name] = {"bytes": len(data), "crc32": f"{zlib.crc32(data):08x}"}
    write_json(os.path.join(out, CHECKSUMS_NAME), {
        "algorithm": "crc32 (zlib.crc32 of the bytes, as 8 hex digits)",
        "generator": {"tool": "bench/safetensors_model.py", "shape": "Mistral-7B-Instruct-v0.2",
                      "layers": a.layers, "seed": a.seed, "values": a.values,
                      "shard_max_gib": a.shard_max_gib},
        "files": {k: file_sums[k] for k in sorted(file_sums)},
        "tensors": tensor_sums,
    })
    el = time.perf_counter() - t0
    log(f"[generate] done: {total / GIB:.3f} GiB in {el:.1f} s ({total / MIB / el:.0f} MiB/s)"
        f"{' incl. fsync' if a.fsync else ' (not fsynced: run sync before dropping caches)'}")
    for name in sorted(file_sums):
        print(f"{file_sums[name]['bytes']:>14}  {name}")
    return 0


# --------------------------------------------------------------------------
# parsing (shared by load and checksums)

def parse_header(buf, file_size, fname):
    """buf: the mapped file. Returns (N, metadata, entries sorted by offset),
    applying the reference implementation's checks."""
    if file_size < 8:
        raise FormatError(f"{fname}: {file_size} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > MAX_HEADER:
        raise FormatError(f"{fname}: header length {n} is over the {MAX_HEADER} byte limit")
    if 8 + n > file_size:
        raise FormatError(f"{fname}: header length {n} runs past the end of the "
                          f"{file_size}-byte file (truncated file?)")
    try:
        text = bytes(buf[8:8 + n]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{fname}: header is not UTF-8 ({e})") from None

    def no_dupes(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise FormatError(f"{fname}: header names {k!r} twice")
            d[k] = v
        return d
    try:
        hdr = json.loads(text, object_pairs_hook=no_dupes)
    except ValueError as e:
        raise FormatError(f"{fname}: header is not valid JSON ({e})") from None
    if not isinstance(hdr, dict):
        raise FormatError(f"{fname}: header is not a JSON object")
    meta = hdr.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict)
                                 and all(isinstance(v, str) for v in meta.values())):
        raise FormatError(f"{fname}: __metadata__ must map strings to strings")
    entries = []
    for name, info in hdr.items():
        ok = (isinstance(info, dict) and info.get("dtype") in DTYPE_BITS
              and isinstance(info.get("shape"), list)
              and all(type(d) is int and d >= 0 for d in info["shape"])
              and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
              and all(type(o) is int and o >= 0 for o in info["data_offsets"]))
        if not ok:
            raise FormatError(f"{fname}: tensor {name!r} has a bad entry {json.dumps(info)[:200]}")
        b, e = info["data_offsets"]
        entries.append((b, e, name, info["dtype"], info["shape"]))
    entries.sort()
    data_len = file_size - 8 - n
    pos = 0
    for b, e, name, dtype, shape in entries:
        if e < b:
            raise FormatError(f"{fname}: tensor {name!r} has data_offsets [{b}, {e}], end before begin")
        if b < pos:
            raise FormatError(f"{fname}: tensor {name!r} at [{b}, {e}] overlaps the previous tensor "
                              f"(which ends at {pos})")
        if b > pos:
            raise FormatError(f"{fname}: gap before tensor {name!r}: it begins at {b}, "
                              f"the previous tensor ends at {pos}")
        bits = DTYPE_BITS[dtype]
        for d in shape:
            bits *= d
        if bits % 8 or bits // 8 != e - b:
            raise FormatError(f"{fname}: tensor {name!r} is {e - b} bytes but {dtype}{shape} "
                              f"needs {bits / 8:g}")
        if e > data_len:
            raise FormatError(f"{fname}: tensor {name!r} ends at data offset {e}, past the end "
                              f"of the file's {data_len} data bytes: file truncated "
                              f"(expected {8 + n + entries[-1][1]} bytes, found {file_size})")
        pos = e
    if pos != data_len:
        raise FormatError(f"{fname}: {data_len - pos} bytes after the last tensor "
                          f"(header says the data is {pos} bytes, file holds {data_len})")
    return n, meta, [(name, dtype, shape, b, e) for b, e, name, dtype, shape in entries]


def read_json_file(path, what):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise FormatError(f"missing {what}: {path}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None


def natural_key(s):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def resolve_shards(model_dir):
    """Shard files in load order and, per shard, the tensor names the index
    puts there (None if there is no index)."""
    idx_path = os.path.join(model_dir, INDEX_NAME)
    if os.path.exists(idx_path):
        idx = read_json_file(idx_path, "index")
        wm = idx.get("weight_map") if isinstance(idx, dict) else None
        if not isinstance(wm, dict) or not wm or not all(isinstance(v, str) for v in wm.values()):
            raise FormatError(f"{idx_path}: no usable weight_map")
        per = {}
        for t, f in wm.items():
            per.setdefault(f, set()).add(t)
        files = sorted(per, key=natural_key)   # vLLM sorts shard files the same way
        for f in files:
            if not os.path.isfile(os.path.join(model_dir, f)):
                raise FormatError(f"missing shard file {os.path.join(model_dir, f)} "
                                  f"(listed in {INDEX_NAME})")
        return [(f, per[f]) for f in files]
    if os.path.isfile(os.path.join(model_dir, SINGLE_NAME)):
        return [(SINGLE_NAME, None)]
    if not os.path.isdir(model_dir):
        raise FormatError(f"no such directory: {model_dir}")
    raise FormatError(f"{model_dir}: neither {INDEX_NAME} nor {SINGLE_NAME}")


# --------------------------------------------------------------------------
# load

def cmd_load(a):
    t0 = time.perf_counter()
    d = a.model_dir
    shards = resolve_shards(d)
    sums = None
    if a.verify:
        sums = read_json_file(os.path.join(d, CHECKSUMS_NAME), "checksum file (--verify needs it)")
        if not isinstance(sums, dict) or not isinstance(sums.get("tensors"), dict):
            raise FormatError(f"{os.path.join(d, CHECKSUMS_NAME)}: no 'tensors' table")
    madv = {"none": None, "sequential": getattr(mmap, "MADV_SEQUENTIAL", None),
            "willneed": getattr(mmap, "MADV_WILLNEED", None)}[a.madvise]
    total = 0
    file_bytes = 0
    ntensors = 0
    first = None
    seen = set()
    per_file = []
    for fname, expected in shards:
        path = os.path.join(d, fname)
        ts = time.perf_counter()
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if a.evict_cache:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if size == 0:
                raise FormatError(f"{fname}: empty file")
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)        # the mapping keeps the file open, as in safetensors
        try:
            if madv is not None:
                mm.madvise(madv)
            n, _meta, entries = parse_header(mm, size, fname)
            names = {e[0] for e in entries}
            if expected is not None:
                missing = sorted(expected - names)
                if missing:
                    raise FormatError(f"{fname}: tensor {missing[0]!r} is in {INDEX_NAME} "
                                      f"but not in the file ({len(missing)} missing)")
                extra = names - expected
                if extra:
                    log(f"[load] warning: {fname} holds {len(extra)} tensor(s) not in the index, "
                        f"e.g. {sorted(extra)[0]!r}; loading them anyway")
            base = 8 + n
            crcs = {}
            walk = entries if a.order == "file" else sorted(entries)
            with memoryview(mm) as mv:
                for name, _dtype, _shape, b, e in walk:
                    with mv[base + b:base + e] as s:
                        c = zlib.crc32(s)      # reads every byte through the mapping
                    crcs[name] = c
                    total += e - b
                    ntensors += 1
                    if first is None:
                        first = (time.perf_counter() - t0, name, e - b)
                    if sums is not None:
                        want = sums["tensors"].get(name)
                        if want is None:
                            raise Mismatch(f"tensor {name} (in {fname}) is not in {CHECKSUMS_NAME}")
                        if int(want["crc32"], 16) != c or want.get("file", fname) != fname:
                            raise Mismatch(
                                f"CRC mismatch in tensor {name} ({fname}, file bytes "
                                f"{base + b}..{base + e}): expected {want['crc32']}, got {c:08x}"
                                + ("" if want.get("file", fname) == fname
                                   else f"; expected in {want['file']}"))
                if sums is not None:
                    want = sums.get("files", {}).get(fname)
                    if want is not None:
                        fc = zlib.crc32(mv[:base])
                        for name, _dtype, _shape, b, e in entries:
                            fc = crc32_combine(fc, crcs[name], e - b)
                        if int(want["crc32"], 16) != fc:
                            raise Mismatch(f"CRC mismatch in {fname} outside the tensor data "
                                           f"(header): expected {want['crc32']}, got {fc:08x}")
            seen |= names
        finally:
            mm.close()
        el = time.perf_counter() - ts
        data = entries[-1][4] if entries else 0
        file_bytes += size
        per_file.append({"file": fname, "bytes": size, "seconds": round(el, 4)})
        log(f"[load] {fname}: {len(entries)} tensors, {data / GIB:.3f} GiB in {el:.2f} s "
            f"({data / MIB / el if el else 0:.0f} MiB/s)")
    if sums is not None:
        absent = sorted(set(sums["tensors"]) - seen)
        if absent:
            raise Mismatch(f"tensor {absent[0]} is in {CHECKSUMS_NAME} but in no shard "
                           f"({len(absent)} missing)")
    wall = time.perf_counter() - t0
    res = {
        "model_dir": d,
        "files": len(shards),
        "tensors": ntensors,
        "bytes": total,
        "file_bytes": file_bytes,
        "seconds": round(wall, 4),
        "mib_per_s": round(total / MIB / wall, 1) if wall else None,
        "gb_per_s": round(total / 1e9 / wall, 3) if wall else None,
        "first_tensor_seconds": round(first[0], 4) if first else None,
        "first_tensor": first[1] if first else None,
        "first_tensor_bytes": first[2] if first else None,
        "order": a.order,
        "madvise": a.madvise,
        "evict_cache": a.evict_cache,
        "verified": a.verify,
        "per_file": per_file,
    }
    if a.json:
        print(json.dumps(res, separators=(",", ":")))
    else:
        print(f"loaded   {ntensors} tensors from {len(shards)} file(s), {total} bytes "
              f"({total / GIB:.3f} GiB)")
        print(f"wall     {wall:.3f} s")
        print(f"rate     {res['mib_per_s']} MiB/s ({res['gb_per_s']} GB/s)")
        if first:
            print(f"first    {first[0] * 1000:.1f} ms to the end of the first tensor "
                  f"({first[1]}, {first[2] / MIB:.1f} MiB)")
        print(f"verify   {'OK: every tensor and file CRC matches ' + CHECKSUMS_NAME if a.verify else 'not asked (--verify)'}")
    return 0


# --------------------------------------------------------------------------
# checksums

def file_crc(path):
    crc = 0
    size = 0
    buf = bytearray(16 * MIB)
    mv = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            crc = zlib.crc32(mv[:n], crc)
            size += n
    return crc, size


def cmd_checksums(a):
    d = a.model_dir
    if not os.path.isdir(d):
        raise FormatError(f"no such directory: {d}")
    cpath = os.path.join(d, CHECKSUMS_NAME)
    recorded = {}
    if os.path.exists(cpath):
        recorded = read_json_file(cpath, "checksum file").get("files", {})
    names = sorted(set(recorded) | {n for n in os.listdir(d)
                                    if n != CHECKSUMS_NAME and os.path.isfile(os.path.join(d, n))})
    rc = 0
    rows = []
    t0 = time.perf_counter()
    nbytes = 0
    for name in names:
        path = os.path.join(d, name)
        want = recorded.get(name)
        if not os.path.isfile(path):
            rows.append({"file": name, "crc32": None, "bytes": None, "status": "MISSING"})
            rc = 2
            continue
        c, size = file_crc(path)
        nbytes += size
        if want is None:
            status = "unrecorded"
        elif int(want["crc32"], 16) == c and want.get("bytes", size) == size:
            status = "OK"
        else:
            status = f"MISMATCH (recorded {want['crc32']}, {want.get('bytes')} bytes)"
            rc = max(rc, 1)
        rows.append({"file": name, "crc32": f"{c:08x}", "bytes": size, "status": status})
    el = time.perf_counter() - t0
    if a.json:
        print(json.dumps({"model_dir": d, "files": rows, "seconds": round(el, 4)},
                         separators=(",", ":")))
    else:
        for r in rows:
            print(f"{r['crc32'] or '-' * 8}  {r['bytes'] if r['bytes'] is not None else '-':>14}  "
                  f"{r['file']}  {r['status']}")
    log(f"[checksums] {nbytes / GIB:.3f} GiB in {el:.2f} s"
        + (f" ({nbytes / MIB / el:.0f} MiB/s)" if el else ""))
    return rc


# --------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(
        prog="safetensors_model.py",
        description="Make a Mistral-7B-Instruct-v0.2-shaped safetensors model (random BF16 "
                    "weights) and load it the way vLLM's safetensors loader does.",
        epilog="Exit codes: 0 ok, 1 --verify mismatch, 2 missing/malformed file.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    g = sub.add_parser(
        "generate", help="write a Mistral-7B-shaped model",
        description="Write a Mistral-7B-Instruct-v0.2-shaped model: real tensor names, shapes "
                    "and dtype (BF16), random values, Hugging Face shard names, index, configs, "
                    "a stand-in tokenizer, and nacre-checksums.json (CRC32 of every tensor "
                    "and file). --layers 4 is 2.11 GiB; --layers 32 is the full 14.48 GB.")
    g.add_argument("out_dir", metavar="OUT_DIR",
                   help="created if missing; must be empty or hold only this tool's output")
    g.add_argument("--layers", type=int, default=4, help="decoder layers (default 4; Mistral-7B has 32)")
    g.add_argument("--shard-max-gib", type=float, default=5.0,
                   help="largest shard file, in GiB (default 5)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0); a tensor's bytes depend only on the seed and its name, so they are the same whatever --layers and --shard-max-gib")
    g.add_argument("--values", choices=["finite", "raw"], default="finite",
                   help="finite (default): random bytes with the BF16 exponent bits limited so "
                        "every weight is a small finite number; raw: plain random bytes "
                        "(about 1 in 256 values is Inf/NaN)")
    g.add_argument("--fsync", action="store_true", help="fsync each shard before it is renamed")
    g.set_defaults(func=cmd_generate)

    ld = sub.add_parser(
        "load", help="load a model as vLLM's safetensors loader does and time it",
        description="For each shard (index order), mmap it read-only, parse and check the header, "
                    "then read every tensor through the mapping (zlib.crc32 over the memoryview "
                    "slice, which faults every page in). Reports bytes, wall time, MiB/s and "
                    "time to the first tensor.")
    ld.add_argument("model_dir", metavar="MODEL_DIR")
    ld.add_argument("--verify", action="store_true",
                    help="check every tensor's and file's CRC32 against nacre-checksums.json; "
                         "exit 1 naming the first mismatch")
    ld.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    ld.add_argument("--order", choices=["file", "name"], default="file",
                    help="tensor order within a shard: file (by offset, default) or name (sorted, "
                         "what vLLM's safe_open(...).keys() loop does; the same order for files "
                         "written by the safetensors library)")
    ld.add_argument("--madvise", choices=["none", "sequential", "willneed"], default="none",
                    help="madvise the mapping first (default none, like safetensors)")
    ld.add_argument("--evict-cache", action="store_true",
                    help="posix_fadvise(DONTNEED) each file before mapping it: drops its clean "
                         "pages from the page cache without root (dirty pages stay: sync first)")
    ld.set_defaults(func=cmd_load)

    c = sub.add_parser(
        "checksums", help="recompute and print every file's CRC32",
        description="Recompute the CRC32 and size of every file in MODEL_DIR, compare with "
                    "nacre-checksums.json where it records one, and print them. Exit 1 on a "
                    "mismatch, 2 if a recorded file is missing.")
    c.add_argument("model_dir", metavar="MODEL_DIR")
    c.add_argument("--json", action="store_true", help="print one JSON line")
    c.set_defaults(func=cmd_checksums)

    a = p.parse_args(argv)
    try:
        return a.func(a)
    except FormatError as e:
        log(f"error: {e}")
        return 2
    except Mismatch as e:
        log(f"verify FAILED: {e}")
        return 1
    except BrokenPipeError:             # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
