"""Time ``convert cope`` on ROPE-test-size infer.py shards (python benchmarks/bench_convert.py --help).

Writes, seeded, what the official COPE ``infer.py`` would write for the ROPE test split
(31,388 pages, 29,810 videos, 30,981 live clips at d=128, about 244 MB of text) when run on
``--nodes`` nodes of ``--ranks`` GPUs each: ``{local_rank}_item``, ``{local_rank}_photo`` and
``{local_rank}_live`` per node directory, each rank's share chosen as ``DistributedSampler`` does
(padded by repeating the first items), each line written by infer.py's own loop. Then converts
them (with the matching manifest) and reports the time, the peak memory and the throughput.
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rope_size import SIZES, generate

SUFFIX = {"P": "item", "V": "photo", "L": "live"}


def rank_indices(n: int, world: int, rank: int) -> list[int]:
    """The indices DistributedSampler(shuffle=False) gives ``rank``: padded by repetition."""
    indices = list(range(n))
    total = math.ceil(n / world) * world
    indices += indices[: total - n]
    return indices[rank:total:world]


def write_shards(root: Path, *, scale: float = 1.0, dim: int = 128, seed: int = 0, nodes: int = 2,
                 ranks: int = 4) -> tuple[list[Path], Path]:
    """Write the node directories and a manifest; return ``(directories, manifest path)``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    embeddings, domains, products = generate(scale=scale, dim=dim, seed=seed)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)  # COPE's outputs are normalised
    rng = np.random.default_rng(seed + 1)
    directories = [root / f"node{k}" for k in range(nodes)]
    for directory in directories:
        directory.mkdir(parents=True)
    manifest_ids, manifest_domains, manifest_products = [], [], []
    for code in SIZES:
        rows = np.flatnonzero(domains == code)
        raw = rng.choice(10**9, size=len(rows), replace=False)  # ROPE ids are integers
        if code == "L":
            start = rng.integers(1_660_000_000_000, 1_690_000_000_000, len(rows))
            keys = [(str(i), str(s), str(s + 60_000)) for i, s in zip(raw, start)]
            manifest_ids += ["|".join(k) for k in keys]
        else:
            keys = [(str(i),) for i in raw]
            manifest_ids += [k[0] for k in keys]
        manifest_domains += [code] * len(rows)
        manifest_products += products[rows].tolist()
        world = nodes * ranks
        for global_rank in range(world):
            node, local_rank = divmod(global_rank, ranks)
            share = rank_indices(len(rows), world, global_rank)
            feats = embeddings[rows[share]].astype("float32").tolist()
            with open(directories[node] / f"{local_rank}_{SUFFIX[code]}", "w") as fw:
                for key, feat in zip([keys[i] for i in share], feats):  # noqa: FURB122  (infer.py's own loop)
                    fw.write("\t".join([*key, ",".join([str(x) for x in feat])]) + "\n")
    manifest = root / "manifest.parquet"
    pq.write_table(pa.table({"item_id": manifest_ids, "domain": manifest_domains,
                             "product_id": manifest_products}), manifest)
    return directories, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the ROPE test size")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--ranks", type=int, default=4, help="GPUs (local ranks) per node")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from ropebench.io.cope import convert_cope

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        directories, manifest = write_shards(root, scale=args.scale, dim=args.dim, seed=args.seed,
                                             nodes=args.nodes, ranks=args.ranks)
        size = sum(p.stat().st_size for d in directories for p in d.iterdir())
        print(f"wrote {size / 1e6:.0f} MB of shards in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            report = convert_cope(directories, root / "submission.parquet", manifest=manifest)
            times.append(time.perf_counter() - started)
        print(report.summary(), end="", file=sys.stderr)
        # A fresh process, for the figure a user sees: imports included, its own peak memory.
        code = ("import sys; from ropebench.io.cope import convert_cope; "
                "convert_cope(sys.argv[1:-2], sys.argv[-2], manifest=sys.argv[-1])")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, *map(str, directories), str(root / "child.parquet"),
                        str(manifest)], check=True)
        child = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        best = min(times)
        print(f"convert cope: {size / 1e6:.0f} MB in {sum(len(list(d.iterdir())) for d in directories)} shards, "
              f"in-process best of {args.repeat}: {best:.2f} s ({size / 1e6 / best:.0f} MB/s; "
              f"all: {', '.join(f'{t:.2f}' for t in times)} s); fresh process {child:.2f} s, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
