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
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from selfsup.recipe import build_data, load_recipe, load_run

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "results"
COSTS = RECORDS / "costs.json"  # written by benchmarks/throughput.py --record
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


TEXT_KINDS = ("text", "tsv", "csv", "parallel")
# Text baselines (TF-IDF, from scratch, averaged word2vec) run with this recipe; the
# word2vec vectors come from runs/bench/sst2_word2vec, so run that recipe first.
TEXT_BASELINE_RECIPE = "sst2_mlm"
TEXT_WORD2VEC = "runs/bench/sst2_word2vec"


def bench_run(name: str) -> Path:
    """The finished run runs/bench/NAME (NAME may also be a run's path), or exit saying so."""
    path = Path(name) if Path(name).exists() else ROOT / "runs" / "bench" / name
    if not (path / "checkpoints").is_dir():
        raise SystemExit(f"{name}: no finished run at {path} (run its benchmark first)")
    return path


def untrained_twin(backbone, recipe):
    """A text run's architecture freshly initialised (seed 0), its token embeddings started
    from the recipe's `word_vectors` run if it names one (`selfsup evaluate`'s vectors_only
    baseline): the control for what pretraining added."""
    from selfsup.evaluate.baselines import random_init_backbone
    from selfsup.text.build import vectors_only_backbone

    if recipe.text.get("word_vectors"):
        return vectors_only_backbone(backbone, recipe, seed=0)
    return random_init_backbone(backbone, seed=0)


def image_draw_runs(description: str, default_draws: int, random_seeds: bool = False):
    """The command line of the image label-draw scripts: RUN... --labels L --draws N (and
    --random-seeds N where `random_seeds`). Returns
    (args, label fraction, {name: run path}, train, test) after checking that every run was
    trained on the first one's data (its labelled splits are the ones evaluated)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("runs", nargs="+", help="image runs (names under runs/bench, or paths)")
    parser.add_argument("--labels", default="1%", help="one label fraction, e.g. 1%%")
    parser.add_argument(
        "--draws", type=int, default=default_draws, help="label draws (seeds 0..N-1)"
    )
    if random_seeds:
        parser.add_argument(
            "--random-seeds", type=int, default=1,
            help="random networks to compare (seeds 0..N-1; default 1: the baseline's seed 0)",
        )  # fmt: skip
    args = parser.parse_args()
    if args.draws < 2:
        raise SystemExit("--draws must be at least 2 (the spread needs two draws)")
    if getattr(args, "random_seeds", 1) < 1:
        raise SystemExit("--random-seeds must be at least 1")
    paths = {name: bench_run(name) for name in args.runs}
    recipe = load_run(paths[args.runs[0]])
    for name, path in paths.items():
        if load_run(path).data != recipe.data:
            raise SystemExit(f"{name} was trained on other data than {args.runs[0]}; compare "
                             "runs of one data set")  # fmt: skip
    fraction = float(args.labels.rstrip("%")) / 100
    return args, fraction, paths, build_data(recipe, "train"), build_data(recipe, "test")


def paired_gap(values: list[float], reference: list[float]) -> str:
    """Mean of the paired differences values - reference, ± its standard error, e.g. "+0.011 ±
    0.002": the label-draw scripts' comparison, where both lists come from the same draws."""
    gaps = [a - b for a, b in zip(values, reference, strict=True)]
    se = statistics.stdev(gaps) / len(gaps) ** 0.5
    return f"{statistics.mean(gaps):+.3f} ± {se:.3f}"


def data_kind(name: str) -> str:
    return load_recipe(ROOT / "recipes" / f"{name}.yaml").data.split(":")[0]


def is_text(name: str) -> bool:
    return data_kind(name) in TEXT_KINDS


def dataset_name(data: str) -> str:
    """cifar10:DIR -> cifar10; tsv:../sst2/train.tsv,... -> sst2 (the data's folder)."""
    kind, _, rest = data.partition(":")
    if kind in TEXT_KINDS:
        return Path(rest.split(",")[0]).parent.name or kind
    return kind


def timed(command: list[str]) -> float:
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - started


def run(
    name: str, baselines: str, evaluate_only: bool = False, protocol: str | None = None
) -> None:
    """Pretrain and evaluate one recipe; `baselines` is "all", "none" or a comma list.

    `evaluate_only`: evaluate the finished run again and keep its recorded pretraining (its
    command and wall time), e.g. after a new protocol was added. With `protocol` (a comma
    list), only those protocols (and `baselines`) are measured again: their rows replace the
    record's rows of the same method, protocol and fraction, and the others are kept.
    """
    out = f"runs/bench/{name}"
    previous = RECORDS / f"{name}.json"
    if protocol and not evaluate_only:
        sys.exit("--protocol re-measures part of a finished run: add --evaluate-only")
    if evaluate_only and not ((ROOT / out / "backbone").is_dir() and previous.exists()):
        sys.exit(f"--evaluate-only needs a finished run in {out} and its record {previous}")
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
    if data_kind(name) in ("moving-mnist", "video"):
        # The video papers judge their initialisation by fine-tuning it against a random one.
        evaluate[evaluate.index("knn,linear")] = "knn,linear,finetune"
    if is_text(name):
        # Text runs pick their own protocols (fine-tune + linear probe; word2vec: linear).
        evaluate = [SELFSUP, "evaluate", out, "--labels", "1%,10%,100%", "--no-progress"]
        word2vec = (ROOT / TEXT_WORD2VEC / "backbone").is_dir() and "word2vec" not in name
        if baselines != "none" and word2vec:
            evaluate += ["--word2vec", TEXT_WORD2VEC]
    if protocol:
        if "--protocol" in evaluate:
            evaluate[evaluate.index("--protocol") + 1] = protocol
        else:
            evaluate += ["--protocol", protocol]
    if baselines != "all":
        evaluate += ["--baselines", baselines]
    if (ROOT / out / "checkpoints" / "last.pt").exists():
        pretrain = [SELFSUP, "pretrain", "--resume", out, "--no-progress"]
    if evaluate_only:
        kept = json.loads(previous.read_text())
        pretrain_command, pretrain_seconds = kept["commands"][0], kept["pretrain_seconds"]
    else:
        pretrain_command = shlex.join(["selfsup", *pretrain[1:]])
        pretrain_seconds = timed(pretrain)
    evaluate_seconds = timed(evaluate)
    results = json.loads((ROOT / out / "metrics.json").read_text())
    commands = [pretrain_command, shlex.join(["selfsup", *evaluate[1:]])]
    if protocol:  # a partial re-measurement: keep the rows it did not redo
        redone = {_row_key(row) for row in results["rows"]}
        kept_rows = [row for row in kept["results"]["rows"] if _row_key(row) not in redone]
        results["rows"] = kept_rows + results["rows"]
        commands = [*kept["commands"], commands[1]]
        evaluate_seconds += kept["evaluate_seconds"]
    record = {
        "name": name,
        "date": date.today().isoformat(),
        "machine": machine(),
        "commands": commands,
        "image_size": load_recipe(ROOT / "recipes" / f"{name}.yaml").image_size,
        "pretrain_seconds": round(pretrain_seconds),
        "evaluate_seconds": round(evaluate_seconds),
        "results": results,
    }
    RECORDS.mkdir(parents=True, exist_ok=True)
    (RECORDS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")


def _row_key(row: dict) -> tuple:
    return row["method"], row["protocol"], row["fraction"]


def render() -> str:
    """docs/results.md from every record: one table per dataset, baselines shared."""
    records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
    records = [r for r in records if "results" in r]  # costs.json is not a run
    costs = json.loads(COSTS.read_text()) if COSTS.exists() else {}
    by_data: dict[tuple[str, int | None], list[dict]] = {}
    for record in records:
        run = record["results"]["run"]
        if record["results"].get("rows"):
            key = (dataset_name(run.get("eval_data", run["data"])), record.get("image_size"))
            by_data.setdefault(key, []).append(record)
    out = [
        "# Results",
        "",
        "Every number below was produced by `benchmarks/run_benchmarks.py` from the recipes",
        "in `recipes/`; the commands, machine and wall times are beside each table. Accuracy",
        "is on the test split; label fractions are stratified with seed 0. Baselines use the",
        "same backbone and label subsets. See docs/evaluation.md for the protocols.",
        "",
    ]
    for (dataset, size), group in by_data.items():
        fractions = sorted({r["fraction"] for g in group for r in g["results"]["rows"]})
        header = " | ".join(f"{100 * f:g}% labels" for f in fractions)
        out += [f"## {dataset}" + (f", images resized to {size} px" if size else ""), ""]
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
        baseline_names = ("raw", "random_init", "supervised", "tfidf", "word2vec", "vectors_only")
        random_linear = rows.get(("random_init", "", "linear"), {})
        from_scratch = rows.get(("supervised", "", "train"), {})
        # Baselines first, then the pretrained rows in name order.
        order = sorted(rows, key=lambda key: (key[0] not in baseline_names, key))
        for method, task, protocol in order:
            cells = rows[(method, task, protocol)]
            texts = []
            for f in fractions:
                value = cells.get(f)
                target = TARGETS.get((dataset, task, protocol, f))
                text = "–" if value is None else f"{value:.3f}"
                if target is not None and value is not None:
                    text += f" ({'meets' if value >= target else 'MISSES'} ≥ {target})"
                below = value is not None and value <= random_linear.get(f, -1.0)
                if method not in baseline_names and protocol == "linear" and below:
                    text += " (≤ random init)"
                below = value is not None and value <= from_scratch.get(f, -1.0)
                if method not in baseline_names and protocol == "finetune" and below:
                    text += " (≤ from scratch)"
                texts.append(text)
            label = {
                "raw": "none (raw pixels)",
                "random_init": "none (random init)",
                "supervised": "none (supervised from scratch)",
                "tfidf": "none (TF-IDF of words + bigrams)",
                "word2vec": "averaged word2vec vectors (sst2_word2vec)",
                "vectors_only": "word2vec's vectors in the same Transformer, no LM pretraining",
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
        # Costs go under the native-size table, or under the one holding the costed recipes.
        if size is None or {r["name"] for r in group} & set(costs):
            out += render_costs(dataset, group, costs)
    return "\n".join(out + text_sections(records))


def text_sections(records: list[dict]) -> list[str]:
    """Held-out perplexity and cross-lingual retrieval of the text runs that have them."""
    out = []
    perplexity = [r for r in records if "perplexity" in r["results"]]
    if perplexity:
        out += [
            "## Text: held-out perplexity",
            "",
            "Each model's own tokenizer, so values compare only within one row's kind.",
            "",
            "| pretraining | kind | perplexity | tokens | tokenizer |",
            "|---|---|---:|---:|---|",
        ]
        for r in perplexity:
            p = r["results"]["perplexity"]
            out.append(
                f"| {r['name']} | {p['kind']} | {p['perplexity']:.2f} | {p['tokens']} | "
                f"{p['tokenizer']} |"
            )
        out.append("")
    retrieval = [r for r in records if "retrieval" in r["results"]]
    if retrieval:
        out += [
            "## Text: cross-lingual sentence retrieval (Multi30k test_2016_flickr)",
            "",
            "| pretraining | en->de | de->en | mean |",
            "|---|---:|---:|---:|",
        ]
        for r in retrieval:
            x = r["results"]["retrieval"]
            out.append(
                f"| {r['name']} | {x.get('en->de', 0):.3f} | {x.get('de->en', 0):.3f} | "
                f"{x['mean']:.3f} |"
            )
        out.append("")
        for r in retrieval:
            if not r["results"].get("rows"):  # not listed under a classification table
                out.append(
                    f"- **{r['name']}** ({r['date']}, {r['machine']}): pretraining "
                    f"{r['pretrain_seconds'] / 60:.1f} min, evaluation "
                    f"{r['evaluate_seconds'] / 60:.1f} min"
                )
                out += [f"  - `{command}`" for command in r["commands"]]
        out.append("")
    return out


def render_costs(dataset: str, group: list[dict], costs: dict[str, dict]) -> list[str]:
    """Throughput and peak memory of each method on this data, beside its linear accuracy."""
    rows = [c for c in costs.values() if dataset_name(c["data"]) == dataset]
    rows.sort(key=lambda c: c["name"])
    if not rows:
        return []
    linear = {
        record["name"]: {
            row["fraction"]: row["accuracy"]
            for row in record["results"]["rows"]
            if row["method"] == "ssl" and row["protocol"] == "linear"
        }
        for record in group
    }
    out = [
        "Cost of each method (`python benchmarks/throughput.py NAME... --record`, one process",
        "per recipe; the bare backbone is forward + backward + step on the same two-view batch).",
        "A ratio below 1 means more than two backbone passes per image (rotation: 4 views, PIRL:",
        "image + 9 tiles, BYOL: a target network too); above 1, less (NPID: one view, MoCo: no",
        "backward through the key encoder). Each phase ran a few seconds on a shared machine:",
        "SimSiam's 1.16, for a method that does at least the bare work, shows the noise's size.",
    ]
    if any(c.get("unit") == "clips" for c in rows):
        out += [
            "Clip tasks count clips (their batch is in clips), and their bare backbone encodes as",
            "many real frames per step as the task does (counted): the ratio is what the",
            "task's sampling, heads and decoders cost beyond encoding its frames.",
        ]
    out += [
        "",
        "| recipe | task | batch | per second | bare backbone, per second | frames per bare step "
        "| ratio | peak memory | linear 1% / 100% |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in rows:
        unit = c.get("unit", "images")
        frames = c.get("frames_encoded_per_step", 2 * c["batch_size"])
        accuracy = linear.get(c["name"])
        accuracy_text = (
            f"{accuracy.get(0.01, float('nan')):.3f} / {accuracy.get(1.0, float('nan')):.3f}"
            if accuracy
            else "not run yet"
        )
        out.append(
            f"| {c['name']} | {c['task']} | {c['batch_size']} "
            f"| {c['pretrain_images_per_s']:.0f} {unit} | {c['bare_images_per_s']:.0f} {unit} "
            f"| {frames} | {c['ratio']:.2f} "
            f"| +{c['peak_memory_mb']:.0f} MB | {accuracy_text} |"
        )
    sample = rows[0]
    dates = " and ".join(sorted({c.get("date", "") for c in rows}))
    walls = [c["wall_seconds"] for c in rows if "wall_seconds" in c]
    wall = f" (wall time {min(walls)} to {max(walls)} s per recipe)" if walls else ""
    out += [
        "",
        f"Measured {dates} on {sample['device']}, {sample['threads']} threads, "
        f"precision {sample['precision']}{wall}; peak memory is the {sample['peak_memory_kind']}.",
        "",
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="recipe names (recipes/<name>.yaml)")
    parser.add_argument(
        "--baselines",
        default="auto",
        help="auto (all for *simclr recipes, else none), yes, no, or a list for selfsup "
        "evaluate such as random_init",
    )
    parser.add_argument("--render", action="store_true", help="only rewrite docs/results.md")
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="evaluate finished runs again, keeping their recorded pretraining",
    )
    parser.add_argument(
        "--protocol",
        help="with --evaluate-only: measure only these protocols (e.g. linear) again and keep "
        "the record's other rows",
    )
    args = parser.parse_args()
    if not args.render:
        for name in args.names:
            if args.baselines == "auto":
                auto = name.endswith("simclr") or name == TEXT_BASELINE_RECIPE
                baselines = "all" if auto else "none"
            else:
                baselines = {"yes": "all", "no": "none"}.get(args.baselines, args.baselines)
            run(name, baselines, args.evaluate_only, args.protocol)
    extra = ROOT / "docs" / "results_extra.md"
    text = render() + ("\n" + extra.read_text() if extra.exists() else "")
    (ROOT / "docs" / "results.md").write_text(text)
    print("wrote docs/results.md")


if __name__ == "__main__":
    main()
