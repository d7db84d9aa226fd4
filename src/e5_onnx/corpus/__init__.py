"""Corpus jobs, `e5-onnx embed`: a file of texts in, a file of vectors out, streamed and resumable.

    jobs.py        the command: flags, chunks, resume, output
    io.py          readers (lines, JSONL, Parquet) and writers (.npy, JSONL, Parquet)
    checkpoint.py  atomic per-chunk checkpoints, input digests
    progress.py    progress and summary lines on stderr
    ray.py         Ray Data (`EmbedBatch`, `embed_dataset`, `e5-onnx embed --ray`); public as `e5_onnx.ray`

Nothing is imported here, so `import e5_onnx.corpus.io` does not load the rest.
"""
