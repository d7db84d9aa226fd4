"""Lookup tables kept on disk while the export rewrites the graph.

multilingual-e5-small's word embeddings are 250,037 x 384 floats, 384 of its 470 MB. Every graph
step (torch's tracer, the fusions' shape inference, SmoothQuant's probes, quantize_dynamic)
copies the whole protobuf several times: with the table inside, the export peaked at 6.8 GB RSS.
So the table leaves the protobuf as soon as it is traced (TABLE_FILE, ONNX external data), the
calibration sessions map it, and the two steps that look at it see a stub of its first rows:
- the fusions check only its rank and width;
- quantize_dynamic quantizes it with one scale and zero point, which it computes from the min
  and max of what it is given: the stub carries the whole table's min and max, and the whole
  table is then quantized with that scale and zero point, by onnxruntime's own function, a block
  of rows at a time (checked against what quantize_dynamic wrote for the stub).
The files written are byte for byte those of an export that kept the table in memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

TABLE_FILE = "word_embeddings.fp32"
TRACED_ROWS = 1024  # rows of a table that torch traces and the graph steps see
BLOCK_ROWS = 16384  # rows read at a time (25 MB of a 384-wide float table)
QUANTIZED_SUFFIX = "_quantized"  # onnxruntime's names for a quantized initializer and its parameters


def write_apart(graph: Path, table: np.ndarray, rows: int) -> None:
    """Point the graph's traced table initializer (equal to table[:rows]) at the whole table,
    written to TABLE_FILE beside the graph as external data."""
    model = onnx.load(str(graph))
    traced = table[:rows].tobytes()
    found = [t for t in model.graph.initializer
             if list(t.dims) == [rows, table.shape[1]] and t.data_type == onnx.TensorProto.FLOAT and t.raw_data == traced]
    if len(found) != 1:
        raise RuntimeError(f"the exported graph has {len(found)} initializers equal to the traced word embeddings, not 1")
    (tensor,) = found
    table.tofile(graph.parent / TABLE_FILE)
    tensor.ClearField("raw_data")
    del tensor.dims[:]
    tensor.dims.extend(table.shape)
    _point_at(tensor, [("location", TABLE_FILE), ("offset", "0"), ("length", str(table.nbytes))])
    onnx.save(model, str(graph))


def lookup_tables(graph: onnx.GraphProto) -> set[str]:
    """Initializers read by nothing but a Gather's data input or EmbedLayerNormalization's tables."""
    tables, other = set(), set()
    for node in graph.node:
        for i, name in enumerate(node.input):
            lookup = (node.op_type == "Gather" and i == 0) or (node.op_type == "EmbedLayerNormalization" and i in (2, 3, 4))
            (tables if lookup else other).add(name)
    return {t.name for t in graph.initializer} & (tables - other)


def load_graph(path: Path) -> onnx.ModelProto:
    """The graph at `path` with every weight in memory but its lookup tables, which stay external
    data on disk (relative to path's directory)."""
    model = onnx.load(str(path), load_external_data=False)
    keep_out = lookup_tables(model.graph)
    for tensor in model.graph.initializer:
        if tensor.name not in keep_out and external_data_helper.uses_external_data(tensor):
            external_data_helper.load_external_data_for_tensor(tensor, str(path.parent))
            tensor.ClearField("data_location")
            del tensor.external_data[:]
    return model


def _point_at(tensor: onnx.TensorProto, entries) -> None:
    del tensor.external_data[:]
    for key, value in entries:
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


class Stubbed:
    """An external float table replaced in a graph by an inline stub of its first rows."""

    def __init__(self, tensor: onnx.TensorProto, base_dir: Path):
        if tensor.data_type != onnx.TensorProto.FLOAT:
            raise ValueError(f"{tensor.name}: an external lookup table of type {tensor.data_type}, not float")
        info = external_data_helper.ExternalDataInfo(tensor)
        self.name, self.dims = tensor.name, list(tensor.dims)
        self.entries = [(e.key, e.value) for e in tensor.external_data]
        self.path, self.offset = base_dir / info.location, info.offset or 0
        self.width = int(np.prod(self.dims[1:]))

    def blocks(self, rows: int = BLOCK_ROWS):
        """The table, `rows` rows at a time, as float32 [n, width] arrays read from its file."""
        with open(self.path, "rb") as f:
            for start in range(0, self.dims[0], rows):
                n = min(rows, self.dims[0] - start)
                f.seek(self.offset + 4 * start * self.width)
                yield np.fromfile(f, dtype="<f4", count=n * self.width).reshape(n, self.width)


def shrink(model: onnx.ModelProto, base_dir: Path, with_range: bool = False) -> list[Stubbed]:
    """Replace each external float lookup table of `model` by its first TRACED_ROWS rows; with_range:
    the stub's first two values become the whole table's min and max. Returns what `restore` and
    `quantize_whole` need."""
    stubbed = []
    names = lookup_tables(model.graph)
    for tensor in model.graph.initializer:
        if tensor.name not in names or not external_data_helper.uses_external_data(tensor):
            continue
        table = Stubbed(tensor, base_dir)
        stub = next(table.blocks(min(table.dims[0], TRACED_ROWS))).copy()
        if with_range:
            lo, hi = np.inf, -np.inf
            for block in table.blocks():
                lo, hi = min(lo, block.min()), max(hi, block.max())
            stub.flat[0], stub.flat[1] = lo, hi
        del tensor.external_data[:]
        tensor.ClearField("data_location")
        tensor.raw_data = stub.tobytes()
        tensor.dims[0] = stub.shape[0]
        stubbed.append(table)
    return stubbed


def files(stubbed: list[Stubbed]) -> set[str]:
    return {value for t in stubbed for key, value in t.entries if key == "location"}


def restore(model: onnx.ModelProto, stubbed: list[Stubbed]) -> None:
    """Point each stub in `model` back at its table on disk."""
    by_name = {t.name: t for t in model.graph.initializer}
    for table in stubbed:
        if table.name not in by_name:
            raise RuntimeError(f"the rewritten graph lost the lookup table {table.name}")
        tensor = by_name[table.name]
        tensor.ClearField("raw_data")
        del tensor.dims[:]
        tensor.dims.extend(table.dims)
        _point_at(tensor, table.entries)


def quantize_whole(model: onnx.ModelProto, stubbed: list[Stubbed]) -> None:
    """In quantize_dynamic's output for a graph whose tables were stubs (shrink, with_range), make
    each quantized stub the whole table quantized with the scale and zero point quantize_dynamic
    computed (from the stub, which holds the table's min and max). A table it left in float (a
    Gather it does not quantize) is put back whole, in memory."""
    from onnxruntime.quantization.quant_utils import quantize_nparray

    init = {t.name: t for t in model.graph.initializer}
    for table in stubbed:
        names = [table.name + QUANTIZED_SUFFIX, table.name + "_scale", table.name + "_zero_point"]
        if table.name in init and not any(n in init for n in names):
            tensor = init[table.name]
            tensor.raw_data = b"".join(block.tobytes() for block in table.blocks())
            del tensor.dims[:]
            tensor.dims.extend(table.dims)
            continue
        if not all(n in init for n in names):
            raise RuntimeError(f"quantize_dynamic's output has neither {table.name} nor its quantized form")
        q, scale, zero_point = (init[n] for n in names)
        scale, zero_point = numpy_helper.to_array(scale), numpy_helper.to_array(zero_point)
        stub = numpy_helper.to_array(q).reshape(-1)
        whole = np.concatenate([quantize_nparray(q.data_type, block.reshape(-1), scale, zero_point)
                                for block in table.blocks()])
        if not q.HasField("raw_data") or whole.dtype != stub.dtype or not np.array_equal(whole[2:stub.size], stub[2:]):
            raise RuntimeError(f"{table.name}: quantizing the table by blocks disagrees with quantize_dynamic")
        q.raw_data = whole.tobytes()
        del q.dims[:]
        q.dims.extend(table.dims)
