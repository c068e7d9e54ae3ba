"""Reproduce docs/results.md: pretrain each recipe, evaluate it, record commands and wall times.

    python benchmarks/run_benchmarks.py fmnist_simclr fmnist_rotation   # run, then re-render
    python benchmarks/run_benchmarks.py --render                        # only re-render

Each recipe name is recipes/<name>.yaml; its run goes to runs/bench/<name> and its record to
docs/results/<name>.json. Baselines (raw pixels, random init, supervised from scratch) depend
on the data and the backbone, not on the task, so `--baselines none` skips them for a recipe
whose dataset + backbone already has them recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "results"
SELFSUP = str(Path(sys.executable).with_name("selfsup"))

# Targets from the foundation issue: (dataset prefix, protocol, fraction) -> accuracy.
TARGETS = {
    ("fashion-mnist", "simclr", "linear", 0.01): 0.83,
    ("fashion-mnist", "simclr", "linear", 1.0): 0.90,
    ("cifar10", "simclr", "linear", 0.01): 0.40,
    ("cifar10", "simclr", "linear", 1.0): 0.60,
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{os.cpu_count()} CPU cores ({cpu}), no GPU, torch {torch.__version__}"


def timed(command: list[str]) -> float:
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - started


def run(name: str, baselines: bool) -> None:
    out = f"runs/bench/{name}"
    pretrain = [
        SELFSUP,
        "pretrain",
        "--recipe",
        f"recipes/{name}.yaml",
        "--out",
        out,
        "--no-progress",
    ]
    evaluate = [
        SELFSUP,
        "evaluate",
        out,
        "--protocol",
        "knn,linear",
        "--labels",
        "1%,10%,100%",
        "--no-progress",
    ]
    if not baselines:
        evaluate += ["--baselines", "none"]
    if (ROOT / out / "checkpoints" / "last.pt").exists():
        pretrain = [SELFSUP, "pretrain", "--resume", out, "--no-progress"]
    pretrain_seconds = timed(pretrain)
    evaluate_seconds = timed(evaluate)
    results = json.loads((ROOT / out / "metrics.json").read_text())
    record = {
        "name": name,
        "date": date.today().isoformat(),
        "machine": machine(),
        "commands": [
            shlex.join(["selfsup", *pretrain[1:]]),
            shlex.join(["selfsup", *evaluate[1:]]),
        ],
        "pretrain_seconds": round(pretrain_seconds),
        "evaluate_seconds": round(evaluate_seconds),
        "results": results,
    }
    RECORDS.mkdir(parents=True, exist_ok=True)
    (RECORDS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")


def render() -> str:
    """docs/results.md from every record: one table per dataset, baselines shared."""
    records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
    by_data: dict[str, list[dict]] = {}
    for record in records:
        by_data.setdefault(record["results"]["run"]["data"], []).append(record)
    out = [
        "# Results",
        "",
        "Every number below was produced by `benchmarks/run_benchmarks.py` from the recipes",
        "in `recipes/`; the commands, machine and wall times are beside each table. Accuracy",
        "is on the test split; label fractions are stratified with seed 0. Baselines use the",
        "same backbone and label subsets. See docs/evaluation.md for the protocols.",
        "",
    ]
    for data, group in by_data.items():
        dataset = data.split(":")[0]
        fractions = sorted({r["fraction"] for g in group for r in g["results"]["rows"]})
        header = " | ".join(f"{100 * f:g}% labels" for f in fractions)
        out += [f"## {dataset}", ""]
        if "metric" in group[0]["results"]:  # e.g. video: both digits of a clip right
            out += [f"Accuracy here: {group[0]['results']['metric']}.", ""]
        out += [
            f"| pretraining | protocol | {header} |",
            "|---|---|" + "---:|" * len(fractions),
        ]
        # Rows keyed by (label, task, protocol): two recipes of one task stay two rows.
        rows: dict[tuple[str, str, str], dict[float, float]] = {}
        for record in group:
            task = record["results"]["run"]["task"]
            for row in record["results"]["rows"]:
                ssl = row["method"] == "ssl"
                key = (
                    record["name"] if ssl else row["method"],
                    task if ssl else "",
                    row["protocol"],
                )
                rows.setdefault(key, {})[row["fraction"]] = row["accuracy"]
        for (method, task, protocol), cells in rows.items():
            texts = []
            for f in fractions:
                value = cells.get(f)
                target = TARGETS.get((dataset, task, protocol, f))
                text = "–" if value is None else f"{value:.3f}"
                if target is not None and value is not None:
                    text += f" ({'meets' if value >= target else 'MISSES'} ≥ {target})"
                texts.append(text)
            label = {
                "raw": "none (raw pixels)",
                "random_init": "none (random init)",
                "supervised": "none (supervised from scratch)",
            }.get(method, method)
            out.append(f"| {label} | {protocol} | " + " | ".join(texts) + " |")
        out.append("")
        for record in group:
            out.append(
                f"- **{record['name']}** ({record['date']}, {record['machine']}): "
                f"pretraining {record['pretrain_seconds'] / 60:.1f} min, evaluation "
                f"{record['evaluate_seconds'] / 60:.1f} min"
            )
            out += [f"  - `{command}`" for command in record["commands"]]
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="recipe names (recipes/<name>.yaml)")
    parser.add_argument("--baselines", default="auto", choices=("auto", "yes", "no"))
    parser.add_argument("--render", action="store_true", help="only rewrite docs/results.md")
    args = parser.parse_args()
    if not args.render:
        for name in args.names:
            baselines = args.baselines == "yes" or (
                args.baselines == "auto" and name.endswith("simclr")
            )
            run(name, baselines)
    extra = ROOT / "docs" / "results_extra.md"
    text = render() + ("\n" + extra.read_text() if extra.exists() else "")
    (ROOT / "docs" / "results.md").write_text(text)
    print("wrote docs/results.md")


if __name__ == "__main__":
    main()
