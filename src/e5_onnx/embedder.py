"""The public entry point: texts in, L2-normalised E5 embeddings out, in input order."""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Set as AbstractSet
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from .backends import int8_saturates, open_session, resolve
from .compact import (CENTRED, RANGED, MissingRangesError, check_centre, check_precision, check_ranges, params_file,
                      quantize, ranges_file)
from .lock import default_model_name
from .manifest import ModelDirError, graph_name, load_manifest, variant_files, verified_path
from .pool import mean_pool_normalize
from .registry import resolve_model_dir
from .tokenize import Ids, TextTokenizer, compact
from .windows import TokenCounts, check_mode, combine, counts, sequences

T = TypeVar("T")
VARIANTS = ("int8", "fp32", "bf16")  # bf16: the fp32 graph at bf16 (backend="openvino")
TOKENISE_SLICE = 1024  # texts per tokenizers call in encode: its Encodings live for one slice only


class Embedder:
    """E5 sentence embeddings from an ONNX export, with no torch at run time.

    `path_or_name` is a directory written by `e5-onnx export`, or a model name: an installed
    model package (`e5-onnx pack`) provides it, else the cache (~/.cache/e5-onnx, or
    $E5_ONNX_CACHE) holds its export. See registry.resolve_model_dir.

    A batch holds at most `batch_size` texts and `max_batch_tokens` padded tokens. onnxruntime's
    time per token is lowest when a call holds 64-512 tokens: below, every call streams all the
    weights; above, the activations leave the cache. A small budget also keeps short texts out of
    long texts' batches (benchmarks/token_budget.py: 512 gives 1.36-1.45x the throughput of 4,096
    on mixed texts, 1.10-1.23x on passages, the same on short queries).

    `backend`: "onnxruntime" (variants "int8", the default, and "fp32"), "openvino" (the
    [openvino] extra: the fp32 graph at "bf16", its default where the CPU has bf16, or "fp32"),
    or "auto" (OpenVINO bf16 where it is installed and the CPU has AMX, else onnxruntime INT8);
    None reads $E5_ONNX_BACKEND, else onnxruntime. `threads`: the cores this Embedder may use
    (None: this process's CPU affinity and cgroup quota). An encode call of one batch runs on all of
    them (onnxruntime; OpenVINO runs one-thread calls); a call of several batches runs those of
    alike size in rounds of `threads` one-thread calls side by side (onnxruntime loads a one-thread
    session for them on first use), the others on all of them (`side_by_side_plan`).

    `.graph` names the graph file loaded: for INT8 on an x86 CPU without VNNI, the export's U8U8
    twin, whose integer products are exact there (onnxruntime's U8S8 kernels saturate).
    """

    def __init__(
        self,
        path_or_name: str | os.PathLike | None = None,
        variant: str | None = None,
        *,
        backend: str | None = None,
        threads: int | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 512,
        long_text: str = "truncate",
        spinning: bool = True,
    ) -> None:
        backend, variant = resolve(backend, variant)
        _check_positive("batch_size", batch_size)
        _check_positive("max_batch_tokens", max_batch_tokens)
        if threads is not None:
            _check_positive("threads", threads, "or None for the cores this process may use")
        self.model_dir = resolve_model_dir(path_or_name or default_model_name())
        self.manifest = load_manifest(self.model_dir)
        graph_variant = "fp32" if variant == "bf16" else variant  # bf16 runs the fp32 graph
        if graph_variant not in self.manifest["variants"]:
            raise ModelDirError(f"{self.model_dir} has no {graph_variant!r} variant; it has {sorted(self.manifest['variants'])}")
        self.backend = backend
        self.variant = variant
        self.graph_variant = graph_variant  # the file: bf16 runs the fp32 graph (and its compact ranges)
        self._ranges: np.ndarray | None = None
        self._centre: np.ndarray | None = None
        self.dim: int = self.manifest["dim"]
        self.max_length: int = self.manifest["max_length"]
        self.query_prefix: str = self.manifest["query_prefix"]
        self.passage_prefix: str = self.manifest["passage_prefix"]
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        # Texts past max_length: "truncate" keeps the first max_length tokens; "window" embeds
        # every window of the text (windows.py) and returns their normalised mean.
        self.long_text = check_mode(long_text)

        # Tokenizer first, then the session: with the weights memory-mapped from model*.onnx.data
        # the session's load transient is small, and this order peaks lowest (fresh process, load
        # + one text, 3 runs each: multilingual 374 MB vs 384 MB session-first; it was the other
        # way round, 475 vs 550 MB, while the weights sat inside the graph file).
        self.tokenizer = TextTokenizer.from_export(self.model_dir, self.manifest)
        saturates = backend == "onnxruntime" and int8_saturates()
        # the graph file this CPU runs: on x86 without VNNI the INT8 variant's U8U8 twin (export/u8u8.py)
        self.graph = graph_name(self.manifest, graph_variant, saturates)
        if saturates and graph_variant == "int8" and self.graph == self.manifest["variants"]["int8"]:
            warnings.warn(f"{self.model_dir} was exported before the U8U8 graph (2026-12-07): onnxruntime's INT8 "
                          "kernels clip on this CPU (x86 without VNNI), which costs its vectors fidelity "
                          "(MiniLM: cosine to torch 0.9948 instead of 0.9975); re-export the model",
                          RuntimeWarning, stacklevel=2)
        for name in variant_files(self.manifest, graph_variant):  # both INT8 graphs: a damaged export fails on every CPU
            verified_path(self.model_dir, self.manifest, name)
        self.session = open_session(
            backend, variant, self.model_dir / self.graph,
            threads=threads,
            position_offset=self.manifest.get("position_offset", 0),
            spinning=spinning,  # off in `e5-onnx serve`, whose event loop shares the cores
        )

    def encode(self, texts: Sequence[str], *, long_text: str | None = None, precision: str = "float32") -> np.ndarray:
        """Embed texts exactly as given -> (len(texts), dim) float32, rows of norm 1, input order.

        `precision` "int8" / "uint8" (dim bytes a row), "binary" / "ubinary" (dim / 8 bytes of packed
        sign bits) give sentence-transformers' `quantize_embeddings` layout (compact.py), with int8
        ranges fixed at export (`compact_ranges`), so a text's code does not depend on its batch.
        "binary-centred" / "ubinary-centred" pack the bits of x > `compact_centre()` instead of
        x > 0 (this package's extension, for E5's off-centre vectors: docs/compact.md).

        `texts`: a list, tuple, generator or 1-D NumPy array of str; any Unicode text is embedded
        (NUL, control and zero-width characters go to the model's own tokenizer as they are;
        see `long_text` for texts past the length limit). A non-str item is a TypeError, a lone
        surrogate (U+D800-U+DFFF, which UTF-8 cannot hold) a ValueError; both name the item's
        index. A dict or set is a TypeError (a dict would give its keys, a set has no order).
        """
        return self.encode_counted(texts, long_text=long_text, precision=precision)[0]

    def encode_counted(self, texts: Sequence[str], *, long_text: str | None = None, precision: str = "float32"
                       ) -> tuple[np.ndarray, TokenCounts]:
        """`encode`, plus the token counts of the same tokenisation (what `e5-onnx embed` reports)."""
        ranges, centre = self.compact_params(precision)
        texts = _check_texts(texts)
        mode = self.long_text if long_text is None else check_mode(long_text)
        seqs: list[Ids] = []
        owners, parts = [np.zeros(0, dtype=np.int64)], []
        for start, encodings in self._tokenised(texts, mode):
            part, owner = sequences(encodings, mode)
            seqs += compact(part)  # the ids alone: the Encodings live for one slice
            owners.append(owner + start)
            parts.append(counts(encodings, mode))
        owner = np.concatenate(owners)
        out = np.empty((len(seqs), self.dim), dtype=np.float32)

        def embed(session, batch) -> None:  # each batch writes only its own rows
            out[batch.order] = mean_pool_normalize(session.run(batch.input_ids, batch.attention_mask),
                                                   batch.attention_mask)
        batches = self.tokenizer.batch_encodings(seqs, self.batch_size, self.max_batch_tokens)
        alone = range(len(batches))
        if self.session.streams > 1 and len(batches) > 1:
            paired, alone = side_by_side_plan(batches.tokens, self.session.streams,
                                                self.session.threads_per_call == 1)
            if paired:
                side = self.session.side_by_side()
                run_side_by_side(lambda i: embed(side, batches[i]), paired, self.session.streams)
        for i in alone:  # one call on every thread: the lowest latency for a single batch
            embed(self.session, batches[i])
        return quantize(combine(out, owner, len(texts)), precision, ranges, centre=centre), _joined(parts)

    def compact_params(self, precision: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(ranges, centre) `precision` needs from the export (None where it needs none); a bad
        precision or an export without them fails here, before any text is embedded."""
        precision = check_precision(precision)
        return (self.compact_ranges() if precision in RANGED else None,
                self.compact_centre() if precision in CENTRED else None)

    def compact_ranges(self) -> np.ndarray:
        """This model's int8/uint8 ranges: (2, dim) float32 per-dimension [min; max] of its calibration
        texts' embeddings (this variant's), read from the export and sha256-checked. Pass them as
        `ranges=` to sentence-transformers' quantize_embeddings to get the same codes.
        MissingRangesError (a ValueError) for an export made before compact vectors existed."""
        if self._ranges is None:
            name = ranges_file(self.manifest, self.graph_variant)
            if name is None:
                raise MissingRangesError(
                    f"the export in {self.model_dir} records no int8/uint8 ranges (made by an e5-onnx without "
                    "compact vectors): re-export it (`e5-onnx export`) for int8/uint8; binary and ubinary work as is")
            ranges = np.load(verified_path(self.model_dir, self.manifest, name), allow_pickle=False)
            try:
                self._ranges = check_ranges(ranges, self.dim).astype(np.float32)
            except ValueError as error:
                raise ModelDirError(f"{self.model_dir / name}: {error}; re-export the model") from None
        return self._ranges

    def compact_centre(self) -> np.ndarray:
        """This model's threshold for binary-centred / ubinary-centred: (dim,) float32 per-dimension
        mean of its calibration texts' embeddings (this variant's), read from the export and
        sha256-checked. Pass it as `centre=` to compact.quantize / search.rescore.
        MissingRangesError (a ValueError) for an export made before the centred bits existed."""
        if self._centre is None:
            name = params_file(self.manifest, self.graph_variant, "centre")
            if name is None:
                raise MissingRangesError(
                    f"the export in {self.model_dir} records no centre for binary-centred / ubinary-centred (made by "
                    "an older e5-onnx): re-export it (`e5-onnx export`); binary and ubinary work as is")
            centre = np.load(verified_path(self.model_dir, self.manifest, name), allow_pickle=False)
            try:
                self._centre = check_centre(centre, self.dim).astype(np.float32)
            except ValueError as error:
                raise ModelDirError(f"{self.model_dir / name}: {error}; re-export the model") from None
        return self._centre

    def embed_stream(
        self, texts: Iterable[str], chunk_size: int = 1024, *, long_text: str | None = None,
        precision: str = "float32",
    ) -> Iterator[np.ndarray]:
        """Embed an iterable of any length, `chunk_size` texts at a time: yields one
        (rows, dim) array per chunk, in input order; memory is bounded by the chunk, not the corpus.

        Chunk k always holds texts [k * chunk_size, (k + 1) * chunk_size) and is batched exactly
        as `encode` batches it, so a job that resumes at a chunk boundary reproduces the vectors
        of an uninterrupted run (the INT8 recipe is batch-invariant to cos >= 0.99999; fixed
        chunks keep the rows bit-identical too).
        """
        if isinstance(texts, (str, bytes, dict, set, frozenset)):
            raise TypeError(f"texts must be an ordered iterable of str, not a {type(texts).__name__}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.compact_params(precision)  # a missing range or centre is an error before the first chunk, not after
        items, start = iter(texts), 0
        while chunk := list(islice(items, chunk_size)):
            try:
                chunk = _check_texts(chunk)
            except (TypeError, ValueError) as error:  # name the item by its index in the whole stream
                at_stream = re.sub(r"texts\[(\d+)\]", lambda m: f"texts[{start + int(m.group(1))}]", str(error))
                raise type(error)(at_stream) from None
            yield self.encode(chunk, long_text=long_text, precision=precision)
            start += len(chunk)

    def count_tokens(self, texts: Sequence[str], *, long_text: str | None = None) -> TokenCounts:
        """Tokens per text as the model would see them (after truncation, or summed over the
        windows), and which texts are over the model's limit."""
        mode = self.long_text if long_text is None else check_mode(long_text)
        return _joined([counts(encodings, mode) for _, encodings in self._tokenised(_check_texts(texts), mode)])

    def _tokenised(self, texts: list[str], mode: str) -> Iterator[tuple[int, list]]:
        """(start, Encodings of texts[start:start + TOKENISE_SLICE]): a tokenizers Encoding holds
        offsets, token strings and overflow windows besides the ids, ~20x their size (one encode
        of 100,000 mixed texts held 6.9 GB of them), so no call keeps more than a slice alive.
        truncate: a huge text costs its first tokens, not its length (cut.py); window needs them all."""
        for start in range(0, len(texts), TOKENISE_SLICE):
            yield start, self.tokenizer.encode(texts[start : start + TOKENISE_SLICE], head_only=mode == "truncate")

    def encode_queries(self, texts: Sequence[str], *, precision: str = "float32") -> np.ndarray:
        """Embed search queries (or both sides of a symmetric task): adds the `query: ` prefix."""
        return self.encode([self.query_prefix + t for t in _check_texts(texts)], precision=precision)

    def encode_passages(self, texts: Sequence[str], *, precision: str = "float32") -> np.ndarray:
        """Embed documents to be retrieved: adds the `passage: ` prefix."""
        return self.encode([self.passage_prefix + t for t in _check_texts(texts)], precision=precision)


# Two one-thread calls side by side beat one two-thread call after the other only if the smaller
# holds at least (s - 1) of the larger's tokens, s = 1.6 the two-thread speed-up of one 512-token
# call (docs/benchmarks.md, "encode's batches side by side": side by side 1.23x on alike batches),
# and only for batches big enough: pairs of 70-150-token batches (lists of 16 short queries) read
# 0.84x of not pairing them (benchmarks/side_by_side.py, "pair small batches").
ALIKE = 0.6
MIN_TOKENS = 256


def side_by_side_plan(tokens: list[int], streams: int, one_thread_only: bool) -> tuple[list[int], list[int]]:
    """(batches to run as one-thread calls side by side, batches to run one call on every thread)
    by index, from each batch's padded tokens. onnxruntime: whole rounds of `streams` batches
    of at least MIN_TOKENS and within ALIKE of the largest, the rest on every thread.
    `one_thread_only` (a session whose calls each run on one thread, as OpenVINO's streams): all
    side by side."""
    if one_thread_only:
        return list(range(len(tokens))), []
    alike = [i for i, n in enumerate(tokens) if n >= max(ALIKE * max(tokens), MIN_TOKENS)]
    paired = alike[: len(alike) // streams * streams]
    chosen = set(paired)
    return paired, [i for i in range(len(tokens)) if i not in chosen]


def run_side_by_side(fn: Callable[[T], None], items: Iterable[T], streams: int) -> None:
    """fn(item) for every item, `streams` calls at a time, at most 2 x streams items in flight (a
    long call's batches are made as they are needed); the first error is raised."""
    with ThreadPoolExecutor(streams, thread_name_prefix="e5-onnx-stream") as pool:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * streams:
                pending.popleft().result()
        while pending:
            pending.popleft().result()


def _joined(parts: list[TokenCounts]) -> TokenCounts:
    return TokenCounts(np.concatenate([np.zeros(0, dtype=np.int64)] + [c.tokens for c in parts]),
                       np.concatenate([np.zeros(0, dtype=bool)] + [c.over_limit for c in parts]))


def _check_positive(name: str, value: object, alternative: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int (1 or more{', ' + alternative if alternative else ''}), got {value}")


# A lone surrogate (U+D800-U+DFFF) is a str item Python allows but no UTF-8 text can hold:
# tokenizers refuses it with a TypeError that names no item.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_texts(texts: Iterable[str]) -> list[str]:
    """The texts as a list of str, in order, or a TypeError / ValueError naming the bad item.

    Accepts any ordered iterable of str: a list, tuple, generator, a NumPy string array
    (np.str_ items). A dict or set is refused: a dict would give its keys, a set has no order.
    """
    if isinstance(texts, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"texts must be a list of str, not a single {type(texts).__name__}; wrap it in a list")
    if isinstance(texts, (dict, Mapping)):
        raise TypeError(f"texts must be a list of str, not a {type(texts).__name__} (which would give its keys); "
                        "pass list(d.values()) or list(d) to say which")
    if isinstance(texts, (set, frozenset, AbstractSet)):
        raise TypeError(f"texts must be a list of str, not a {type(texts).__name__}: it has no order for the "
                        "rows to follow; pass sorted(...) or a list")
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise TypeError(f"texts must be a 1-D array of str, not a {texts.ndim}-D array")
    try:
        items = iter(texts)
    except TypeError:
        raise TypeError(f"texts must be a list of str, not {type(texts).__name__}") from None
    checked = []
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        bad = _SURROGATE.search(text)
        if bad:
            raise ValueError(f"texts[{i}] holds a lone surrogate U+{ord(bad.group()):04X} at character {bad.start()}, "
                             "which is not valid Unicode text (decode the source with errors='replace')")
        checked.append(str(text))  # np.str_ -> str; a str is returned as is, not copied
    return checked
