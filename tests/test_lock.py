"""models.lock: the four pinned models, read by the runtime (packaged copy) and the exporter alike."""
import json

from e5_onnx.lock import default_model_name, get_spec, model_specs, read_lock
from tests.conftest import ROOT

PINS = {
    "e5-small-v2": "dca8b1a9dae0d4575df2bf423a5edb485a431236",
    "e5-small": "e272f3049e853b47cb5ca3952268c6662abda68f",
    "multilingual-e5-small": "fd1525a9fd15316a2d503bf26ab031a61d056e98",
    "e5-small-unsupervised": None,
}


def test_lock_pins_the_four_models():
    specs = model_specs()
    assert set(specs) == set(PINS)
    for name, rev in PINS.items():
        s = specs[name]
        assert s.revision == rev and s.repo == f"intfloat/{name}"
        assert (s.dim, s.max_length, s.query_prefix, s.passage_prefix) == (384, 512, "query: ", "passage: ")
        assert isinstance(s.files, dict)
    assert not specs["e5-small-unsupervised"].pinned
    assert specs["multilingual-e5-small"].tokenizer.startswith("sentencepiece")
    assert default_model_name() == "e5-small-v2"


def test_packaged_lock_is_the_top_level_file():
    assert read_lock() == json.loads((ROOT / "models.lock").read_text())
    assert get_spec("intfloat/e5-small") == get_spec("e5-small")
