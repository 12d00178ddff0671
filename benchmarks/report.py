"""Turn a pytest-benchmark JSON report into a markdown table with side-by-side ratios.

python benchmarks/report.py benchmarks/latest.json > benchmarks/latest.md
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

OURS = "test_video_mode[1 face-yunet]"
STILL = "test_recognize_still[1 face-yunet-fast]"
STILL_ACCURATE = "test_recognize_still[1 face-yunet-accurate]"
STILL_HAAR = "test_recognize_still[1 face-haar-fast]"
BASELINES = {"seed loop": "test_seed_loop", "fer package": "test_fer_package"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("report", type=Path, help="pytest-benchmark --benchmark-json output")
    args = parser.parse_args(argv)
    data: dict[str, Any] = json.loads(args.report.read_text())
    rows = {b["name"]: b for b in data["benchmarks"]}
    machine = data.get("machine_info", {})
    print(
        f"Machine: {machine.get('cpu', {}).get('brand_raw', platform.processor())}, "
        f"{machine.get('cpu', {}).get('count', '?')} logical cores, "
        f"Python {machine.get('python_version', '?')}; "
        f"{data.get('datetime', '')[:19]}"
    )
    print()
    print("| group | case | median ms | mean ms | min ms | rounds |")
    print("|---|---|---:|---:|---:|---:|")
    for b in sorted(data["benchmarks"], key=lambda b: (b["group"] or "", b["name"])):
        s = b["stats"]
        print(
            f"| {b['group']} | {b['name'].removeprefix('test_')} | {s['median'] * 1e3:.2f} | "
            f"{s['mean'] * 1e3:.2f} | {s['min'] * 1e3:.2f} | {s['rounds']} |"
        )
    print()
    for ours_name, label in (
        (OURS, "video mode, 1 face"),
        (STILL, "still image, 1 face, fast"),
        (STILL_ACCURATE, "still image, 1 face, accurate"),
        (STILL_HAAR, "still image with Haar, 1 face"),
    ):
        ours = rows.get(ours_name)
        if ours is None:
            continue
        for name, key in BASELINES.items():
            base = rows.get(key)
            if base is None:
                print(f"- {label} vs {name}: baseline not run (package missing)")
                continue
            ratio = base["stats"]["median"] / ours["stats"]["median"]
            print(
                f"- {label}: {ours['stats']['median'] * 1e3:.2f} ms vs {name} "
                f"{base['stats']['median'] * 1e3:.2f} ms: **{ratio:.1f}x faster**"
            )
    for model in ("accurate", "fast", "fp32"):
        for faces in (1, 8):
            b = rows.get(f"test_classify[{model}-{faces}]")
            if b:
                per_face = b["stats"]["median"] * 1e3 / faces
                print(
                    f"- classify {model}, batch {faces}: {per_face:.3f} ms per face, "
                    f"{1000 / per_face:.0f} faces/s"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
