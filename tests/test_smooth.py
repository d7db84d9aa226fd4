"""SmoothQuant (export/smooth.py): an exact rewrite of the fp32 graph that evens out activations."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer, models

from export import smooth
from export.calibration import calibration_texts
from export.probes import probe_texts

HELD_OUT = ["query: how much protein should a female eat", "passage: Москва — столица России.", "a"]


def run(model: onnx.ModelProto, feeds: list[dict]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, f)[0] for f in feeds]


@pytest.fixture(scope="module")
def fp32_and_feeds(tiny_exports):
    export = tiny_exports["wordpiece-bert"]
    model = onnx.load(str(export / "model.onnx"))
    tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
    inputs = [i.name for i in model.graph.input]
    return (model, smooth.calibration_feeds(tokenizer, calibration_texts(), inputs),
            smooth.calibration_feeds(tokenizer, HELD_OUT, inputs))


def test_smoothing_leaves_the_fp32_outputs_unchanged(fp32_and_feeds):
    model, calibration, held_out = fp32_and_feeds
    smoothed = smooth.smooth(model, calibration, alpha=0.7)
    for before, after in zip(run(model, held_out), run(smoothed, held_out)):
        assert np.abs(after - before).max() <= 1e-4 * np.abs(before).max()


def test_smoothing_folds_attention_outputs_and_inserts_one_mul_per_layernorm(fp32_and_feeds):
    model, calibration, _ = fp32_and_feeds
    smoothed = smooth.smooth(model, calibration, alpha=0.7)
    readers = smooth.matmul_inputs(model.graph, skip=set())
    assert len(readers) == 2 * 4  # per layer: Q/K/V input, attention output, FFN in, FFN out
    inserted = [n for n in smoothed.graph.node if n.name.endswith("_smooth")]
    assert len(inserted) == 2 * 3  # attention outputs are folded into the value projection
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    changed = [n.input[1] for n in smoothed.graph.node if n.op_type == "MatMul"
               if not np.array_equal(onnx.numpy_helper.to_array(
                   next(i for i in smoothed.graph.initializer if i.name == n.input[1])), weights[n.input[1]])]
    assert len(changed) == 2 * 6  # every MatMul weight rescaled (V twice: rows and columns)


def test_skipped_matmuls_keep_their_inputs_and_weights(fp32_and_feeds):
    model, calibration, _ = fp32_and_feeds
    every = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    smoothed = smooth.smooth(model, calibration, alpha=0.7, skip=every)
    assert [n.input for n in smoothed.graph.node] == [n.input for n in model.graph.node]
    assert [i.raw_data for i in smoothed.graph.initializer] == [i.raw_data for i in model.graph.initializer]


def test_calibration_texts_are_not_probe_texts(tiny_exports):
    tokenizer = Tokenizer.from_file(str(tiny_exports["wordpiece-bert"] / "tokenizer.json"))
    tokenizer.no_truncation()
    assert not set(calibration_texts()) & set(probe_texts(tokenizer, 64))


def test_calibration_refuses_inputs_it_cannot_feed():
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "x": 1}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="pixel_values"):
        smooth.calibration_feeds(tokenizer, ["x"], ["input_ids", "pixel_values"])
