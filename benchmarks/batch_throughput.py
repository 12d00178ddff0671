"""Throughput of batch inference over a folder of photos: a plain loop, the local pool, Ray.

    python benchmarks/make_batch_corpus.py --out /tmp/fer_corpus        # 2,000 photos
    python benchmarks/batch_throughput.py --corpus /tmp/fer_corpus [--engines loop,local,ray]

* ``loop``: one process, ``EmotionRecognizer()`` with its default settings, ``recognize(path)``
  per file: what a user writes before ``fer-onnx batch`` exists.
* ``local``: ``fer_onnx.batch.run(engine="local")``: a process pool, one worker per core.
* ``ray``: ``run(engine="ray")`` on a local Ray cluster started here with ``--ray-cpus`` CPUs
  (default: the cores). Starting Ray, and a one-row dataset that starts Ray Data's per-cluster
  stats and autoscaling actors, are timed apart and not counted: a running cluster has them.

Times are wall times from the call to the end: model loading, worker start-up and writing the
Parquet tables are included (the loop writes nothing). With ``--repeat N`` the engines take
turns N times and the table shows each one's median run. Prints a markdown table; ``--json``
also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from fer_onnx import EmotionRecognizer, FerOnnxError
from fer_onnx.batch import find_inputs, run

ENGINES = ("loop", "local", "ray")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def bench_loop(files: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    faces = errors = 0
    with EmotionRecognizer() as rec:
        for path in files:
            try:
                faces += len(rec.recognize(path))
            except FerOnnxError:
                errors += 1
    return {"faces": faces, "errors": errors, "seconds": time.perf_counter() - start}


def bench_run(files: list[str], engine: str, workers: int | None, out: Path) -> dict[str, Any]:
    summary = run(files, out, engine=engine, workers=workers)  # type: ignore[arg-type]
    if not summary.accounted:
        raise SystemExit(f"{engine}: not every input accounted for: {summary.describe()}")
    return {"faces": summary.faces, "errors": summary.errors, "seconds": summary.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="folder of photos")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos")
    parser.add_argument("--workers", type=int, default=None, help="local pool size (cores)")
    parser.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the Ray cluster")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine; the median")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
    files = list(find_inputs([args.corpus]).paths)[: args.limit]
    if not files:
        parser.error(f"no photos in {args.corpus}")

    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in engines}
    with tempfile.TemporaryDirectory(prefix="fer-batch-bench-") as tmp:
        for attempt in range(args.repeat):  # engines take turns, so that load hits each alike
            for engine in engines:
                out = Path(tmp) / f"{engine}-{attempt}.parquet"
                if engine == "loop":
                    r = bench_loop(files)
                elif engine == "local":
                    r = bench_run(files, "local", args.workers, out)
                else:
                    import ray
                    import ray.data

                    start = time.perf_counter()
                    ray.init(num_cpus=args.ray_cpus or cores(), include_dashboard=False)
                    # A one-row dataset starts Ray Data's per-cluster (detached) stats and
                    # autoscaling actors, which a running cluster already has.
                    ray.data.range(1).materialize()
                    startup = time.perf_counter() - start
                    try:
                        r = bench_run(files, "ray", None, out)
                    finally:
                        ray.shutdown()
                    r["startup"] = startup
                runs[engine].append(r)
                print(f"{engine}: {len(files)} files, {r['faces']} faces, {r['seconds']:.1f} s")
    results = {
        engine: sorted(rs, key=lambda r: float(r["seconds"]))[len(rs) // 2]  # the median run
        for engine, rs in runs.items()
    }
    load_after = os.getloadavg()[0]

    base = results.get("loop")
    print()
    print("| engine | photos | faces | seconds | photos/s | faces/s | vs loop | all runs s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for engine, r in results.items():
        rate = len(files) / r["seconds"]
        ratio = f"{(base['seconds'] / r['seconds']):.2f}x" if base else "-"
        every = ", ".join(f"{x['seconds']:.1f}" for x in runs[engine])
        print(
            f"| {engine} | {len(files)} | {r['faces']} | {r['seconds']:.1f} | {rate:.1f} | "
            f"{r['faces'] / r['seconds']:.1f} | {ratio} | {every} |"
        )
    print()
    print(
        f"{cores()} cores; load average (1 min) {load_before:.2f} before, {load_after:.2f} after"
        f"; median of {args.repeat} runs per engine"
    )
    if "ray" in runs:
        startups = ", ".join(f"{x['startup']:.1f}" for x in runs["ray"])
        print(f"ray.init and Ray Data's first dataset, not counted above: {startups} s")
    faces = {r["faces"] for r in results.values()}
    if len(faces) > 1:
        print(f"WARNING: the engines found different numbers of faces: {faces}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "files": len(files),
                    "cores": cores(),
                    "load": [load_before, load_after],
                    "results": results,
                    "runs": runs,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
