"""`e5-onnx demo`: the model card's example end to end, printing the query-passage score matrix.

The README's first command ends with it: it shows that install, export and load worked, with
numbers a reader can check against the model card (each query scores its own passage highest).
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from .backends import BACKENDS, ENV as BACKEND_ENV
from .embedder import VARIANTS, Embedder
from .packages.listing import source_text

# intfloat/e5-small-v2 model card (English models): queries, then passages, in matching order.
CARD_EN = {
    "queries": ["query: how much protein should a female eat", "query: summit define"],
    "passages": [
        "passage: As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 "
        "is 46 grams per day. But, as you can see from this chart, you'll need to increase that if you're "
        "expecting or training for a marathon. Check out the chart below to see how much protein you should "
        "be eating each day.",
        "passage: Definition of summit for English Language Learners. : 1  the highest point of a mountain : "
        "the top of a mountain. : 2  the highest level. : 3  a meeting or series of meetings between the "
        "leaders of two or more governments.",
    ],
}

# intfloat/multilingual-e5-small model card.
CARD_MULTILINGUAL = {
    "queries": ["query: how much protein should a female eat", "query: 南瓜的家常做法"],
    "passages": [
        CARD_EN["passages"][0],
        "passage: 1.清炒南瓜丝 原料:嫩南瓜半个 调料:葱、盐、白糖、鸡精 做法: 1、南瓜用刀薄薄的削去表面一层皮,"
        "用勺子刮去瓤 2、擦成细丝(没有擦菜板就用刀慢慢切成细丝) 3、锅烧热放油,入葱花煸出香味 "
        "4、入南瓜丝快速翻炒一分钟左右,放盐、一点白糖和鸡精调味出锅 2.香葱炒南瓜 原料:南瓜1只 "
        "调料:香葱、蒜末、橄榄油、盐 做法: 1、将南瓜去皮,切成片 2、油锅8成热后,入蒜末爆香 "
        "3、入南瓜片快速翻炒,再放盐、香葱,翻炒均匀 4、加入南瓜丝快速翻炒一分钟左右,放盐、一点白糖和鸡精调味出锅",
    ],
}


def score_table(model: Embedder, card: dict) -> str:
    """Cosine x 100 of every query (rows) against every passage (columns), as the model card shows."""
    scores = model.encode(card["queries"]) @ model.encode(card["passages"]).T * 100
    header = " " * 8 + "".join(f"passage {j + 1:<4}" for j in range(scores.shape[1]))
    rows = [f"query {i + 1} " + "".join(f"{s:<12.2f}" for s in row) for i, row in enumerate(scores)]
    texts = [f"  query {i + 1}:   {t[:70]}" for i, t in enumerate(card["queries"])]
    texts += [f"  passage {j + 1}: {t[:68]}..." for j, t in enumerate(card["passages"])]
    return "\n".join(texts + ["", header] + rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="e5-onnx demo", description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default=os.environ.get("E5_ONNX_MODEL"),
                   help="export directory or model name (default: E5_ONNX_MODEL, else the lock's default)")
    p.add_argument("--variant", choices=VARIANTS, default=os.environ.get("E5_ONNX_VARIANT"),
                   help="default: the backend's (onnxruntime int8, openvino bf16)")
    p.add_argument("--backend", choices=BACKENDS, default=os.environ.get(BACKEND_ENV))
    args = p.parse_args(argv)
    model = Embedder(args.model, variant=args.variant, backend=args.backend)
    name = model.manifest.get("name") or model.model_dir.name
    card = CARD_MULTILINGUAL if "multilingual" in name else CARD_EN
    print(f"{name} ({model.variant}, {model.backend}) from {source_text(model.manifest)}\nloaded from {model.model_dir}\n")
    print(score_table(model, card))
    return 0
