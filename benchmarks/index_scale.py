"""One query against a large index, brute force: ``RunIndex.score`` streaming row chunks of every
component file (gradlens.store.index), on random-valued files written into a temporary folder.

Two settings (the issue's): N = 100,000 examples x 211 components x 64 dimensions, float32
(5.4 GB), and N = 1,000,000 x 211 x 16, float16 (6.8 GB; each vector stored over its norm, as the
index stores float16). For each: the files are written and flushed, then a fresh process scores
``--queries`` random queries over every component (the full gradient): the first query right
after the files were dropped from the page cache (``posix_fadvise(DONTNEED)``: the cold figure),
then the same queries again with the files in the page cache (warm; median reported); its peak
resident memory (``VmHWM``) is reported. With ``--check`` the first query's top 10 is set
against the obvious computation (every row's cosine in float64). The folder is deleted at the
end; ``small`` is a quick run of the same code.

    python benchmarks/index_scale.py                    # both settings (needs ~7 GB free)
    python benchmarks/index_scale.py --only 100k --queries 5 --dir /tmp
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gradlens.store.index import IndexWriter, open_folder

SETTINGS = {
    "100k": {"n": 100_000, "k": 211, "d": 64, "dtype": "float32"},
    "1M": {"n": 1_000_000, "k": 211, "d": 16, "dtype": "float16"},
    "small": {"n": 50_000, "k": 21, "d": 64, "dtype": "float32"},
}
#: Rows written per block while building the random files.
WRITE_ROWS = 20_000


def build(folder: Path, n: int, k: int, d: int, dtype: str, seed: int = 0) -> float:
    """Random N(0, 1) vectors (float32 drawn, stored as ``dtype``) for ``n`` rows; seconds."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    writer = IndexWriter(folder, "bench", range(k), [d] * k, {"train": n}, dtype)
    for start in range(0, n, WRITE_ROWS):
        rows = min(WRITE_ROWS, n - start)
        blocks = [rng.standard_normal((rows, d), dtype=np.float32) for _ in range(k)]
        writer.write_block("train", start, blocks)
    writer.finalize(digests=False)
    writer.close()
    return time.perf_counter() - t0


def _drop_cache(folder: Path) -> None:
    for path in folder.rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _brute_top(ix, query, k: int = 10) -> np.ndarray:
    """The obvious computation: every row's cosine in float64, row blocks of every file."""
    n = ix.info.n_train
    dots = np.zeros(n)
    t_sq = np.zeros(n)
    sq = ix.sqnorms("train")
    for lo in range(0, n, 50_000):
        rows = slice(lo, min(n, lo + 50_000))
        for c in range(len(ix.info.components)):
            dots[rows] += ix.block("train", c, rows).astype(np.float64) @ query[c]
        t_sq[rows] = np.asarray(sq[rows]).sum(1)
    q_sq = sum(float(q @ q) for q in query)
    cos = dots / (np.sqrt(q_sq * t_sq) + 1e-12)
    return np.lexsort((np.arange(n), -cos))[:k]


def _peak_rss_mb() -> float:
    """This process's peak resident size (``VmHWM``). Not ``ru_maxrss``: Linux carries that
    over ``exec`` from the forked parent, whose building of the files it would report."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def score(folder: Path, queries: int, check: bool) -> dict:
    """Run in a fresh process: cold first query, then warm repeats; peak RSS."""
    ix = open_folder(folder)
    rng = np.random.default_rng(1)
    qs = [[rng.standard_normal(d).astype(np.float32) for d in ix.info.dims] for _ in range(queries)]
    _drop_cache(folder)
    t0 = time.perf_counter()
    first = ix.score(qs[0]).top(10)
    cold = time.perf_counter() - t0
    warm, cpu, tops = [], [], []
    for q in qs:
        t0, c0 = time.perf_counter(), time.process_time()
        tops.append(ix.score(q).top(10).rows)
        warm.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out = {
        "cold_s": cold,
        "warm_s": warm,
        "warm_median_s": float(np.median(warm)),
        "warm_cpu_median_s": float(np.median(cpu)),  # all threads: the busy box's wall is longer
        "peak_rss_mb": _peak_rss_mb(),
        "same_top_cold_warm": bool(np.array_equal(first.rows, tops[0])),
    }
    if check:
        out["top10_equals_float64_brute_force"] = bool(
            np.array_equal(_brute_top(ix, [q.astype(np.float64) for q in qs[0]]), tops[0])
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SETTINGS), action="append")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--check", action="store_true", help="top 10 against float64 numpy")
    parser.add_argument("--score", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.score:
        print(json.dumps(score(Path(args.score), args.queries, args.check)))
        return
    for name in args.only or ["100k", "1M"]:
        s = SETTINGS[name]
        size = s["n"] * s["k"] * s["d"] * np.dtype(s["dtype"]).itemsize + s["n"] * s["k"] * 8
        free = shutil.disk_usage(args.dir).free
        if free < 1.1 * size:
            sys.exit(f"{name}: needs {size / 1e9:.1f} GB in {args.dir}, {free / 1e9:.1f} GB free")
        folder = Path(tempfile.mkdtemp(prefix=f"index-scale-{name}-", dir=args.dir))
        try:
            seconds = build(folder / "bench", **s)
            load = os.getloadavg()
            child = subprocess.run(
                [sys.executable, __file__, "--score", str(folder / "bench")]
                + ["--queries", str(args.queries)]
                + (["--check"] if args.check else []),
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(child.stdout)
            result |= {"setting": name, **s, "files_gb": size / 1e9, "build_s": seconds}
            result |= {"load_before": load, "load_after": os.getloadavg()}
            print(json.dumps(result))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
