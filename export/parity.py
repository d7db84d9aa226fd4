"""Reference embeddings from torch and the comparison the export must pass before it is done."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Issue #2 set the floor at 0.99 / 0.97. Raised to what the current recipe achieves with margin on
# the probe set (the hardest texts: empty, one word, many scripts): MiniLM asset mean 0.99795,
# min 0.99498; multilingual-e5-small rebuild 0.99960 / 0.99922; tiny random models >= 0.9999.
FP32_MIN_COSINE = 0.99999
INT8_MEAN_COSINE = 0.996
INT8_MIN_COSINE = 0.99


@torch.inference_mode()
def torch_embeddings(model, hf_tokenizer, texts: list[str], max_length: int, batch_size: int = 8) -> np.ndarray:
    """The reference: transformers tokenisation + the torch model, masked mean, L2 norm, float32."""
    out = []
    for start in range(0, len(texts), batch_size):
        enc = hf_tokenizer(
            texts[start : start + batch_size], padding=True, truncation=True,
            max_length=max_length, return_tensors="pt",
        )
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out).astype(np.float32)


@dataclass
class ParityResult:
    name: str  # e.g. "torch_vs_int8"
    cosines: np.ndarray
    min_required: float
    mean_required: float

    @property
    def ok(self) -> bool:
        return bool(self.cosines.min() >= self.min_required and self.cosines.mean() >= self.mean_required)

    def summary(self) -> dict:
        return {
            "n_texts": int(self.cosines.size),
            "cosine_mean": float(self.cosines.mean()),
            "cosine_min": float(self.cosines.min()),
            "required_mean": self.mean_required,
            "required_min": self.min_required,
        }

    def failures(self, texts: list[str]) -> list[str]:
        """One line per text below the minimum (and the mean, if that failed)."""
        lines = [
            f"{self.name}: cosine {c:.6f} < {self.min_required} for text #{i} {texts[i][:80]!r}"
            for i, c in enumerate(self.cosines) if c < self.min_required
        ]
        if self.cosines.mean() < self.mean_required:
            worst = int(self.cosines.argmin())
            lines.append(
                f"{self.name}: mean cosine {self.cosines.mean():.6f} < {self.mean_required} "
                f"(worst text #{worst} {texts[worst][:80]!r}: {self.cosines[worst]:.6f})"
            )
        return lines


def compare(name: str, reference: np.ndarray, candidate: np.ndarray, min_required: float,
            mean_required: float) -> ParityResult:
    cosines = np.sum(reference.astype(np.float64) * candidate.astype(np.float64), axis=1)
    return ParityResult(name, cosines, min_required, mean_required)
