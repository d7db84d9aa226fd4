"""Corpus files for `e5-onnx embed`: streaming readers (lines, JSONL, Parquet) and writers
(.npy, JSONL, Parquet), one chunk at a time so memory never holds the corpus.

Readers yield (id, text) records; every problem in a file is a ValueError / OSError naming the
file and, for line formats, the line number. Writers take the finished chunks in order.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import numpy as np

from ..compact import DTYPES, width
from ..extras import MissingExtraError

INPUT_FORMATS = ("auto", "lines", "jsonl", "parquet")
OUTPUT_FORMATS = {".npy": "npy", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
Record = tuple[Any, str]  # (id or None, text)


def import_pyarrow() -> Any:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet
    except ModuleNotFoundError:
        raise MissingExtraError('Parquet needs pyarrow, which is not installed: pip install "e5-onnx[parquet]"') from None
    return pyarrow


def input_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.endswith(".parquet"):
        return "parquet"
    return "jsonl" if path.endswith((".jsonl", ".ndjson")) else "lines"


def output_format(path: str) -> str:
    """npy / jsonl / parquet from the output's extension ("-" is JSONL on stdout)."""
    if path == "-":
        return "jsonl"
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the output format of {path!r}: name it .npy, .jsonl or .parquet (or - for stdout)")
    return fmt


class LineReader:
    """One text per line (`lines`: every line is a text, empty ones included, so row i is line
    i), or JSONL (`jsonl`: a JSON string or an object with a string text field, optional id;
    blank lines skipped). Bytes are decoded per line, so a bad one is reported by its number."""

    def __init__(self, path: str, fmt: str, text_field: str = "text", id_field: str | None = None) -> None:
        self.path, self.fmt = path, fmt
        self.text_field, self.id_field = text_field, id_field or "id"
        self.stream: BinaryIO = sys.stdin.buffer if path == "-" else _open_input(path)
        self.size = _regular_size(self.stream)
        self.total_rows: int | None = None
        self.bytes_read = 0
        self.has_ids = fmt == "jsonl"

    def fraction_done(self) -> float | None:
        return self.bytes_read / self.size if self.size else None

    def __iter__(self) -> Iterator[Record]:
        with self.stream:
            for number, raw in enumerate(self.stream, 1):
                self.bytes_read += len(raw)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ValueError(f"{self.path}:{number}: not valid UTF-8 (byte {raw[error.start]:#04x} at "
                                     f"column {error.start + 1}); convert the file to UTF-8") from None
                if number == 1:
                    line = line.removeprefix("\ufeff")  # a UTF-8 byte order mark is not text
                line = line.removesuffix("\n").removesuffix("\r")
                if self.fmt == "lines":
                    yield None, line
                elif line.strip():
                    yield self._json_record(line, number)

    def _json_record(self, line: str, number: int) -> Record:
        where = f"{self.path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
        if isinstance(item, str):
            return None, item
        text = item.get(self.text_field) if isinstance(item, dict) else None
        if not isinstance(text, str):
            raise ValueError(f'{where}: expected a JSON string or an object with a string "{self.text_field}" field')
        return item.get(self.id_field), text


class ParquetReader:
    """A text column (string) and an optional id column of a Parquet file, read in record batches."""

    def __init__(self, path: str, text_column: str = "text", id_column: str | None = None) -> None:
        pa = import_pyarrow()
        _open_input(path).close()  # a missing or unreadable file reads as such, not as a Parquet error
        try:
            self.file = pa.parquet.ParquetFile(path)
        except pa.ArrowException as error:
            raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
        names = self.file.schema_arrow.names
        if id_column is None and "id" in names:
            id_column = "id"
        for column in (text_column, id_column):
            if column is not None and column not in names:
                raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(names)}); "
                                 "choose with --text-column / --id-column")
        kind = self.file.schema_arrow.field(text_column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f"{path}: column {text_column!r} holds {kind}, not strings")
        self.path, self.text_column, self.id_column = path, text_column, id_column
        self.total_rows: int | None = self.file.metadata.num_rows
        self.has_ids = id_column is not None
        self.rows_read = 0

    def fraction_done(self) -> float | None:
        return self.rows_read / self.total_rows if self.total_rows else None

    def __iter__(self) -> Iterator[Record]:
        columns = [self.text_column] + ([self.id_column] if self.id_column else [])
        for batch in self.file.iter_batches(batch_size=8192, columns=columns):
            texts = batch.column(self.text_column)
            if texts.null_count:
                row = self.rows_read + texts.is_null().to_pylist().index(True)
                raise ValueError(f"{self.path}: row {row}: column {self.text_column!r} is null")
            ids = batch.column(self.id_column).to_pylist() if self.id_column else [None] * len(texts)
            for record in zip(ids, texts.to_pylist()):
                self.rows_read += 1
                yield record


def open_reader(path: str, fmt: str, text_column: str = "text", id_column: str | None = None) -> LineReader | ParquetReader:
    fmt = input_format(path, fmt)
    if fmt == "parquet":
        if path == "-":
            raise ValueError("Parquet input cannot come from stdin: give its path")
        return ParquetReader(path, text_column, id_column)
    return LineReader(path, fmt, text_column, id_column)


def _open_input(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as error:
        raise OSError(f"cannot read input {path}: {error.strerror or error}") from None


def _regular_size(stream: BinaryIO) -> int | None:
    """The size of a regular file (for the ETA), None for a pipe or terminal."""
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size else None


# (rows x width vectors: float32, or int8/uint8 codes / packed bits (compact.py); ids: one per row,
# None where the input had none)
Chunk = tuple[np.ndarray, list]


def write_npy(stream: BinaryIO, chunks: Iterable[Chunk], rows: int, dim: int, precision: str = "float32") -> None:
    """A .npy file written chunk by chunk: the header carries the final shape, known up front.
    `dim` is the row width (dim / 8 for packed bits); the dtype is the precision's."""
    dtype = np.dtype(DTYPES[precision]).newbyteorder("<")
    np.lib.format.write_array_header_1_0(stream, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": (rows, dim)})
    for vectors, _ in chunks:
        stream.write(np.ascontiguousarray(vectors, dtype=dtype).tobytes())


def write_jsonl(stream: Any, chunks: Iterable[Chunk], has_ids: bool) -> None:
    """One object per text: {"index": row, "id": ... (when the input had ids), "embedding": [...]}.
    Floats are written with enough digits to read back the same float32."""
    index = 0
    for vectors, ids in chunks:
        lines = []
        for vector, id_ in zip(vectors.tolist(), ids):
            record: dict[str, Any] = {"index": index}
            if has_ids:
                record["id"] = id_
            record["embedding"] = vector
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            index += 1
        stream.write("".join(lines))


def write_parquet(path: Path, chunks: Iterable[Chunk], has_ids: bool, dim: int, precision: str = "float32") -> None:
    """index (int64), id (when the input had ids), embedding (fixed_size_list<float32>[dim]; compact:
    fixed_size_list<int8 | uint8>[dim], or [dim / 8] packed bits for binary / ubinary, the
    precision in the schema's metadata as e5_onnx.precision); one row group per chunk."""
    pa = import_pyarrow()
    dtype, dim = np.dtype(DTYPES[precision]), width(precision, dim)
    metadata = {b"e5_onnx.precision": precision.encode()}
    writer = None
    index = 0
    try:
        for vectors, ids in chunks:
            flat = pa.array(np.ascontiguousarray(vectors, dtype=dtype).reshape(-1))
            columns = {"index": pa.array(np.arange(index, index + len(vectors), dtype=np.int64))}
            if has_ids:
                try:
                    columns["id"] = pa.array(ids)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                    raise ValueError(f"ids of rows {index}-{index + len(ids) - 1} cannot form one Parquet column "
                                     f"(mixed types?): {error}") from None
            columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, dim)
            table = pa.table(columns, metadata=metadata)
            if writer is None:
                writer = pa.parquet.ParquetWriter(str(path), table.schema)
            writer.write_table(table.cast(writer.schema) if table.schema != writer.schema else table)
            index += len(vectors)
        if writer is None:  # no rows: still a valid file with the schema
            fields = [("index", pa.int64())] + ([("id", pa.string())] if has_ids else [])
            schema = pa.schema(fields + [("embedding", pa.list_(pa.from_numpy_dtype(dtype), dim))], metadata=metadata)
            writer = pa.parquet.ParquetWriter(str(path), schema)
    finally:
        if writer is not None:
            writer.close()
