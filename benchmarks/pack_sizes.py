"""Model package (wheel) sizes against PyPI's default upload limit of 100 MB per file.

    python -m benchmarks.pack_sizes [--models e5-small-arch,me5]

Packs each benchmark model's export (benchmarks/assets.py) with `e5-onnx pack`, INT8 alone and
INT8 + fp32, and reports the wheel (zipped) and its contents (unzipped) beside the limit. The
e5-small architecture has e5-small / e5-small-v2 / e5-small-unsupervised's exact shapes, so its
package is theirs to within the compression of their weights. Writes benchmarks/results/pack_sizes.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import zipfile
from pathlib import Path

from e5_onnx.packages.pack import PYPI_FILE_LIMIT, pack

from .assets import export_dir
from .data import ROOT

VARIANT_SETS = (("int8",), ("int8", "fp32"))


def measure(name: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variants in VARIANT_SETS:
            wheel = pack(export_dir(name), Path(tmp) / "+".join(variants), name=name, variants=variants)
            size = wheel.stat().st_size
            unzipped = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist())
            rows.append({"model": name, "variants": list(variants), "wheel_bytes": size, "unzipped_bytes": unzipped,
                         "over_pypi_limit_bytes": max(0, size - PYPI_FILE_LIMIT)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="e5-small-arch,me5")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pack_sizes.json")
    args = p.parse_args()
    rows = [row for name in args.models.split(",") for row in measure(name)]
    print(f"| model | variants | wheel MB | unzipped MB | PyPI {PYPI_FILE_LIMIT / 1e6:.0f} MB limit |")
    print("|---|---|---|---|---|")
    for r in rows:
        over = r["over_pypi_limit_bytes"]
        verdict = f"over by {over / 1e6:.1f} MB" if over else "within"
        print(f"| {r['model']} | {'+'.join(r['variants'])} | {r['wheel_bytes'] / 1e6:.1f} | "
              f"{r['unzipped_bytes'] / 1e6:.1f} | {verdict} |")
    args.out.write_text(json.dumps({"pypi_file_limit": PYPI_FILE_LIMIT, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
