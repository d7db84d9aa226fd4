"""Prometheus text exposition (format 0.0.4) for the server: counters, gauges and histograms.

A few dozen lines instead of the prometheus_client dependency: the server needs only these three
kinds, updated from the event loop and the batching thread (hence the lock).
"""
from __future__ import annotations

import bisect
import threading
from typing import Callable


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    def __init__(self, prefix: str = "e5_onnx") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self._values: dict[str, dict[tuple, float]] = {}
        self._buckets: dict[str, tuple[float, ...]] = {}
        self._hist: dict[str, dict[tuple, list]] = {}  # labels -> [bucket counts..., sum, count]
        self._gauges: dict[str, Callable[[], float]] = {}

    def counter(self, name: str, help_: str) -> None:
        self._help[name] = ("counter", help_)
        self._values[name] = {}

    def gauge(self, name: str, help_: str, read: Callable[[], float], kind: str = "gauge") -> None:
        """A value read when scraped; kind="counter" for a running total kept elsewhere."""
        self._help[name] = (kind, help_)
        self._gauges[name] = read

    def histogram(self, name: str, help_: str, buckets: tuple[float, ...]) -> None:
        self._help[name] = ("histogram", help_)
        self._buckets[name] = tuple(sorted(buckets))
        self._hist[name] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            values = self._values[name]
            values[key] = values.get(key, 0) + amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        buckets = self._buckets[name]
        with self._lock:
            row = self._hist[name].setdefault(key, [0] * (len(buckets) + 2))
            i = bisect.bisect_left(buckets, value)  # first bucket with le >= value
            if i < len(buckets):
                row[i] += 1
            row[-2] += value
            row[-1] += 1

    def render(self) -> str:
        lines = []
        with self._lock:
            for name, (kind, help_) in self._help.items():
                full = f"{self.prefix}_{name}"
                lines += [f"# HELP {full} {help_}", f"# TYPE {full} {kind}"]
                if name in self._gauges:
                    lines.append(f"{full} {_num(self._gauges[name]())}")
                elif kind == "counter":
                    for key, value in sorted(self._values[name].items()):
                        lines.append(f"{full}{_labels(key)} {_num(value)}")
                else:
                    for key, row in sorted(self._hist[name].items()):
                        cumulative = 0
                        for le, count in zip(self._buckets[name], row):
                            cumulative += count
                            lines.append(f"{full}_bucket{_labels(key + (('le', _num(le)),))} {cumulative}")
                        lines.append(f"{full}_bucket{_labels(key + (('le', '+Inf'),))} {row[-1]}")
                        lines.append(f"{full}_sum{_labels(key)} {_num(row[-2])}")
                        lines.append(f"{full}_count{_labels(key)} {row[-1]}")
        return "\n".join(lines) + "\n"
