"""Unzipped sizes of a `sam build` output: each function with the layer, against the budgets.

    .venv/bin/python -m benchmarks.build_size [BUILD_DIR]   (default: a fresh x86_64 build)

Lambda counts a function's unzipped code plus all its layers (limit 250 MB). MB = 10^6 bytes.
tests/test_deployment.py asserts the ceilings; benchmarks/bench.py prints these figures too.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAYER = "SharedLayer"
LAMBDA_LIMIT_MB = 250.0

# Budgets for function + layer, unzipped (issue 13). None: no budget set.
BUDGETS_MB: dict[str, float | None] = {
    "TasksFunction": 36.0,
    "ChatFunction": 50.0,
    "McpFunction": None,
    "RemindersFunction": None,
}
# What the tests hold the build to: the budget where there is one, else the measured x86_64
# figure (arm64 is within 1 MB of it) plus 2 MB, so that a regression (debug symbols back, a
# package shipped twice, sources shipped again) fails.
CEILINGS_MB: dict[str, float] = {
    "TasksFunction": 36.0,
    "ChatFunction": 50.0,
    "McpFunction": 43.0,
    "RemindersFunction": 61.0,
}


def folder_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def measure(build_dir: Path) -> dict[str, Any]:
    """{"layer_mb": float, "functions": {name: {"mb", "with_layer_mb", "budget_mb",
    "ceiling_mb"}}} for each function of the build (a folder with an app.py)."""
    layer = folder_bytes(build_dir / LAYER) / 1e6
    functions = {}
    for folder in sorted(build_dir.iterdir()):
        if folder.name == LAYER or not (folder / "app.py").is_file():
            continue
        size = folder_bytes(folder) / 1e6
        functions[folder.name] = {
            "mb": round(size, 2),
            "with_layer_mb": round(size + layer, 2),
            "budget_mb": BUDGETS_MB.get(folder.name),
            "ceiling_mb": CEILINGS_MB.get(folder.name),
        }
    return {"layer_mb": round(layer, 2), "functions": functions}


def rows(sizes: dict[str, Any]) -> list[tuple[str, ...]]:
    """(measure, value, budget, ratio) rows, as benchmarks/bench.py prints them; a function with
    an issue 13 budget also fills bench's target and met columns."""
    table: list[tuple[str, ...]] = [(f"unzipped {LAYER}", f"{sizes['layer_mb']:.1f} MB", "", "")]
    for name, figures in sizes["functions"].items():
        budget = figures["budget_mb"] or LAMBDA_LIMIT_MB
        label = "budget" if figures["budget_mb"] else "Lambda limit"
        row: tuple[str, ...] = (
            f"unzipped {name} + layer",
            f"{figures['with_layer_mb']:.1f} MB",
            f"{budget:.0f} MB ({label})",
            f"{figures['with_layer_mb'] / budget:.2f}x",
        )
        if figures["budget_mb"]:
            met = figures["with_layer_mb"] <= figures["budget_mb"]
            row += ("", "", "", f"<= {budget:.0f} MB", "yes" if met else "NO")
        table.append(row)
    return table


def build(architecture: str, build_dir: Path) -> None:
    print(f"==> sam build ({architecture}) into {build_dir}", file=sys.stderr, flush=True)
    subprocess.run(
        [str(ROOT / "scripts" / "sam_build.sh"), architecture, "--build-dir", str(build_dir)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", nargs="?", type=Path, help="an existing sam build output")
    parser.add_argument("--architecture", choices=["arm64", "x86_64"], default="x86_64")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        build_dir = args.build_dir
        if build_dir is None:
            build_dir = Path(scratch) / "build"
            build(args.architecture, build_dir)
        for measure_name, value, budget, ratio, *target in rows(measure(build_dir)):
            met = f"  met: {target[-1]}" if target else ""
            print(f"{measure_name:<36} {value:>10}  {budget:<22} {ratio}{met}")


if __name__ == "__main__":
    main()
