"""The `selfsup` command: parses flags, builds a recipe and calls selfsup.runs.

Heavy modules (torch, matplotlib) are imported inside the commands so `selfsup --help` and
`selfsup tasks` answer at once.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from selfsup import __version__
from selfsup.errors import Interrupted, SelfSupError

# Flags that map 1:1 onto TrainConfig fields (type, help).
TRAIN_FLAGS: dict[str, tuple[type, str]] = {
    "steps": (int, "optimizer steps (default 1000)"),
    "batch_size": (int, "images per device per step (default 256)"),
    "optimizer": (str, "sgd, adamw or lars (default adamw)"),
    "lr": (float, "peak learning rate (default: per optimizer)"),
    "weight_decay": (float, "weight decay (default 1e-4)"),
    "momentum": (float, "sgd / lars momentum, adamw beta1 (default 0.9)"),
    "warmup_steps": (int, "linear warmup steps before the cosine decay (default 5%% of steps)"),
    "precision": (str, "32, bf16-mixed or 16-mixed (default 32)"),
    "accelerator": (str, "auto, cpu, cuda (or gpu) or mps (default auto)"),
    "devices": (int, "devices per node; >1 runs DDP (gloo on CPU)"),
    "num_nodes": (int, "nodes for multi-node DDP (launch with torchrun, see docs/engine.md)"),
    "checkpoint_every": (int, "write checkpoints/last.pt every N steps (default 500)"),
    "keep_every": (int, "also keep checkpoints/step_N.pt every N steps (default 0: off)"),
    "log_every": (int, "append to metrics.jsonl every N steps (default 10)"),
    "seed": (int, "random seed (default 0)"),
    "num_workers": (int, "DataLoader workers for image folders (default 2)"),
}

# Flags --resume accepts: they change where and how fast the run trains, not its batches, its
# augmentations or its schedule. (A change of accelerator can still change float rounding.)
RESUME_FLAGS = ("num_workers", "accelerator")

# The evaluate flags that decide its rows: a re-run with the same ones (and the same
# checkpoint) takes up the rows an interrupted evaluation finished.
EVALUATE_SETTINGS = ("data", "protocol", "labels", "baselines", "k", "freeze_stages", "rescale",
                     "seed", "device", "word2vec", "retrieval")  # fmt: skip

DEMO_RECIPE = {
    "task": "simclr",
    "backbone": "small_cnn",
    "data": "digits",
    "image_size": 16,
    "train": {
        "steps": 300,
        "batch_size": 256,
        "lr": 2e-3,
        "log_every": 10,
        "checkpoint_every": 100,
    },
}


def _percentages(text: str) -> tuple[float, ...]:
    """'1%,10%,100%' or '0.01,0.1,1' -> (0.01, 0.1, 1.0)."""
    from selfsup.evaluate.labels import parse_fraction

    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = parse_fraction(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad label fraction {part!r}; use e.g. 1%,10%,100% or 0.01,0.1,1"
            ) from None
        if not 0 < value <= 1:
            raise argparse.ArgumentTypeError(f"label fraction {part!r} must be in (0%, 100%]")
        values.append(value)
    return tuple(values)


def _choices(valid: tuple[str, ...], allow_none: bool = False):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(p.strip() for p in text.split(",") if p.strip())
        if allow_none and items == ("none",):
            return ()
        bad = [p for p in items if p not in valid]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown choice(s) {', '.join(bad) or text!r}; valid: {', '.join(valid)}"
            )
        return items

    return parse


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that suggest the closest valid flag."""

    def error(self, message: str):  # type: ignore[override]
        if message.startswith("unrecognized arguments"):
            import difflib

            parsers = [self] + [
                p
                for a in self._actions
                if isinstance(a, argparse._SubParsersAction)
                for p in a.choices.values()
            ]
            flags = {s for parser in parsers for a in parser._actions for s in a.option_strings}
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word, flags, n=1)
                if close:
                    message += f" (did you mean {close[0]}?)"
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="selfsup",
        description="Self-supervised pretraining and few-label evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"selfsup {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    p = sub.add_parser("pretrain", help="learn a representation from unlabeled data")
    p.add_argument("--recipe", help="YAML recipe (see recipes/); flags override it")
    p.add_argument("--task", help="pretext task (see `selfsup tasks`)")
    p.add_argument(
        "--data",
        help="digits, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, folder:DIR, grouped:PATH, "
        "moving-mnist:DIR, video:DIR; text: text:PATH, tsv:PATH[,TEST], csv:PATH[,TEST], "
        "parallel:A,B",
    )
    p.add_argument(
        "--backbone",
        help="small_cnn, resnet18, resnet50, vit_tiny; text: transformer, word_vectors",
    )
    p.add_argument("--image-size", type=int, help="resize images to this square size")
    for name, (kind, text) in TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, help=text)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any recipe value, e.g. task_options.temperature=0.2 (repeatable)",
    )
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--download", action="store_true", help="download the data set if missing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="few-label evaluation of a run against baselines")
    e.add_argument("run", help="run directory written by `selfsup pretrain`")
    e.add_argument("--data", help="labelled data (default: the run's data)")
    e.add_argument(
        "--protocol",
        type=_choices(("knn", "linear", "finetune")),
        default=None,
        help="knn,linear,finetune (default knn,linear; text: finetune,linear)",
    )
    e.add_argument(
        "--labels",
        type=_percentages,
        default=(0.01, 0.1, 1.0),
        help="label fractions (default 1%%,10%%,100%%)",
    )
    e.add_argument(
        "--baselines",
        type=_choices(("raw", "random_init", "supervised", "vectors_only"), True),
        default=("raw", "random_init", "supervised"),
        help="raw,random_init,supervised or none (default those three); vectors_only (text runs "
        "started from word_vectors): the same Transformer with those vectors, no pretraining",
    )
    e.add_argument("--k", type=_at_least_one, default=20, help="neighbours for kNN (default 20)")
    e.add_argument(
        "--freeze-stages",
        type=int,
        default=0,
        help="fine-tuning keeps the first K backbone stages frozen (default 0)",
    )
    e.add_argument(
        "--rescale",
        action="store_true",
        help="fine-tuning first scales each conv back to a fresh network's weight norm (the "
        "function is unchanged; pretraining grows the weights, which slows fine-tuning)",
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto", help="cpu, cuda or auto")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument(
        "--word2vec", metavar="RUN_DIR", help="text: averaged vectors of this word2vec run too"
    )
    e.add_argument(
        "--retrieval",
        metavar="parallel:A,B",
        help="text: cross-lingual retrieval accuracy on these aligned files",
    )

    g = sub.add_parser("generate", help="sample text from a run trained with clm")
    g.add_argument("run")
    g.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    g.add_argument(
        "--tokens", type=_at_least_one, default=100, help="new tokens per sample (default 100)"
    )
    g.add_argument(
        "--samples", type=_at_least_one, default=1, help="continuations to draw (default 1)"
    )
    g.add_argument(
        "--temperature", type=float, default=0.8,
        help="> 1 flatter, < 1 sharper; 0 always takes the likeliest token (default 0.8)",
    )  # fmt: skip
    g.add_argument(
        "--top-k", type=int, default=50,
        help="sample among the k likeliest tokens; 0: among all (default 50)",
    )  # fmt: skip
    g.add_argument("--seed", type=int, default=0)

    m = sub.add_parser("embed", help="write a run's features of a data set to .npy")
    m.add_argument("run")
    m.add_argument("--data", required=True)
    m.add_argument(
        "--split",
        default="all",
        choices=("train", "test", "all"),
        help="all (default): the train split, then the test split where the data has one",
    )
    m.add_argument(
        "--out", required=True, help="output .npy file (X.npy also writes X.rows.tsv beside it)"
    )
    m.add_argument("--device", default="auto")

    f = sub.add_parser(
        "finetune",
        help="fine-tune a run's backbone on labelled images or texts; keep the classifier",
        # --help shows this, not the one-line help: say what is written and what comes next.
        description="Fine-tune RUN's backbone with a linear head on the train split of --data, "
        "print its accuracy on the test split (a labelled folder holds out 20% of each class) "
        "and write the classifier to --out (backbone, head.safetensors, classifier.json); "
        "then label new data with `selfsup predict OUT --data ... --out predictions.csv`.",
    )
    f.add_argument("run", help="run directory written by `selfsup pretrain`")
    f.add_argument(
        "--data",
        help="labelled images, e.g. folder:DIR, or texts, tsv:TRAIN,TEST / csv:TRAIN,TEST "
        "(default: the recipe's evaluate.data, else the run's data)",
    )
    f.add_argument("--out", required=True, help="folder to write the classifier to")
    f.add_argument(
        "--protocol",
        choices=("finetune", "linear"),
        default="finetune",
        help="finetune (default): train the head with the backbone; linear: keep the backbone "
        "as pretrained and fit evaluate's linear probe as the head (often better with very "
        "few labels; see `selfsup evaluate`)",
    )
    f.add_argument(
        "--freeze-stages",
        type=int,
        default=0,
        help="keep the first K backbone stages as pretrained (default 0; for a wholly frozen "
        "backbone, --protocol linear fits a better head)",
    )
    f.add_argument("--steps", type=_at_least_one, help="training steps (default: from the labels)")
    f.add_argument("--epochs", type=_at_least_one, help="or passes over the labelled data")
    f.add_argument(
        "--lr",
        type=float,
        help="AdamW learning rate (default: 1e-3 for images; for texts the recipe's "
        "evaluate.lr, else 1e-4)",
    )
    f.add_argument(
        "--batch-size",
        type=_at_least_one,
        help="default: 256 for images; for texts the recipe's evaluate.batch_size, else 32",
    )
    f.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    f.add_argument("--device", default="auto", help="cpu, cuda or auto")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")

    r = sub.add_parser(
        "predict",
        help="label images or texts with a classifier from `selfsup finetune`",
        description="Write a CSV with one row per image or text of --data: split, index, "
        "label (where the data has one), file or text, the predicted class, its probability "
        "and p(CLASS) for each class; on labelled data also print the fraction right.",
    )
    r.add_argument("classifier", help="folder written by `selfsup finetune`")
    r.add_argument(
        "--data",
        required=True,
        help="images, e.g. folder:DIR; texts: text:FILE (a text a line), tsv:FILE or csv:FILE",
    )
    r.add_argument("--out", required=True, help="CSV file to write, one row per image or text")
    r.add_argument(
        "--split",
        default="all",
        choices=("train", "test", "all"),
        help="all (default): the train split, then the test split where the data has one",
    )
    r.add_argument("--device", default="auto", help="cpu, cuda or auto")

    sub.add_parser("tasks", help="list the pretext tasks")

    d = sub.add_parser(
        "demo", help="pretrain + evaluate on scikit-learn's digits (~30 s on 2 cores)"
    )
    d.add_argument("--out", default="runs/demo")
    return parser


def _recipe_from_args(args: argparse.Namespace):
    from selfsup.recipe import Recipe, read_recipe, set_option

    values = read_recipe(args.recipe) if args.recipe else {}
    recipe = Recipe.from_dict(values, source=args.recipe or "recipe")
    flags = {}  # recipe key -> the flag that set it
    for name in ("task", "data", "backbone", "image_size"):
        value = getattr(args, name)
        if value is not None:
            setattr(recipe, name, value)
            flags[name] = "--" + name.replace("_", "-")
    for name in TRAIN_FLAGS:
        value = getattr(args, name)
        if value is not None:
            recipe.train[name] = value
            flags[f"train.{name}"] = "--" + name.replace("_", "-")
    for assignment in args.set:
        key = assignment.partition("=")[0].strip()
        for flagged, flag in flags.items():
            # --set train={...} replaces every train flag; --set train.steps=3 meets --steps.
            if flagged == key or flagged.startswith(key + ".") or key.startswith(flagged + "."):
                raise SelfSupError(
                    f"{flag} {getattr(args, flagged.rpartition('.')[2])} and --set {assignment} "
                    f"both set {flagged}; give it once"
                )
        set_option(recipe, assignment)
    recipe.check()
    return recipe


def _resume_settings(args: argparse.Namespace, recipe) -> None:
    """Apply the RESUME_FLAGS given with --resume to the recorded recipe."""
    for name in RESUME_FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        before = recipe.train.get(name)
        recipe.train[name] = value
        if name == "accelerator" and value != (before or "auto"):
            print(
                f"note: the run was started with accelerator {before or 'auto'}; on another kind "
                "of device its remaining steps are not bit-identical to an uninterrupted run's",
                file=sys.stderr,
            )
    recipe.check()


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from selfsup.recipe import RUN_FILE, load_run
    from selfsup.runs import pretrain_run

    if args.resume:
        changes = ("recipe", "task", "data", "backbone", "image_size", "out", *TRAIN_FLAGS)
        given = [
            "--" + name.replace("_", "-")
            for name in changes
            if name not in RESUME_FLAGS and getattr(args, name) is not None
        ] + ["--set"] * bool(args.set)
        if given:
            raise SelfSupError(
                f"--resume continues {args.resume} exactly as its {RUN_FILE} records it; "
                f"drop {', '.join(given)} (to train longer or differently, start a new run "
                "with --out)"
            )
        out, recipe = Path(args.resume), load_run(args.resume)
        _resume_settings(args, recipe)
    elif args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise SelfSupError(f"--out {out} is a file; give a directory for the new run")
        recipe = _recipe_from_args(args)
    else:
        raise SelfSupError("pretrain needs --out RUN_DIR (or --resume RUN_DIR)")
    summary = pretrain_run(
        recipe,
        out,
        resume=bool(args.resume),
        download=args.download,
        progress=not args.no_progress,
    )
    if summary.get("rank", 0) != 0:
        return  # under DDP, rank 0 says how it went
    if summary["start_step"] == summary["steps"]:
        print(f"{out} is already complete ({summary['steps']} steps)\nnext: {summary['next']}")
        return
    rate = f"{summary['images_per_second']:.0f} {summary['unit']}/s"
    if summary["start_step"]:
        print(f"resumed at step {summary['start_step']}")
    print(
        f"pretrained {recipe.task} for {summary['steps']} steps in {summary['seconds']:.0f} s "
        f"({rate}); backbone in {out / 'backbone'}\nnext: {summary['next']}"
    )


def _cmd_evaluate(args: argparse.Namespace, command: str) -> None:
    from selfsup.evaluate import format_table
    from selfsup.runs import evaluate_run, kept_rows

    # An interrupted evaluation keeps its finished rows; the same command takes them up again.
    settings = {name: getattr(args, name) for name in EVALUATE_SETTINGS}
    with kept_rows(args.run, settings) as (keep, finished):
        results = evaluate_run(
            args.run,
            data=args.data,
            protocols=args.protocol,
            fractions=args.labels,
            baselines=args.baselines,
            k=args.k,
            freeze_stages=args.freeze_stages,
            rescale=args.rescale,
            seed=args.seed,
            device=args.device,
            command=command,
            progress=not args.no_progress,
            text_options={"word2vec": args.word2vec, "retrieval": args.retrieval},
            on_row=keep,
            finished=finished,
        )
    if results.get("rows"):
        print(format_table(results))
    if "perplexity" in results:  # a text run's number, with or without a table
        print(f"held-out perplexity: {results['perplexity']['perplexity']:.2f}")
    print(f"report: {Path(args.run) / 'report.md'}")


def _cmd_finetune(args: argparse.Namespace) -> None:
    import time

    from selfsup.classifier import finetune_run

    started = time.perf_counter()
    info = finetune_run(
        args.run,
        args.out,
        data=args.data,
        protocol=args.protocol,
        freeze_stages=args.freeze_stages,
        steps=args.steps,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    trained = (
        f"fine-tuned for {info['steps']} steps"
        if info["protocol"] == "finetune"
        else "fitted the linear probe on the frozen features"
    )
    what, new = (
        ("texts", "text:NEW_TEXTS.txt")
        if info["kind"] == "text"
        else ("images", "folder:NEW_IMAGES")
    )
    print(
        f"{trained} on {info[f'train_{what}']} labelled {what}: {info['test_accuracy']:.3f} "
        f"accuracy on the {info[f'test_{what}']} held out "
        f"({time.perf_counter() - started:.0f} s)\n"
        f"classifier in {args.out}\nnext: selfsup predict {args.out} --data {new} "
        "--out predictions.csv"
    )


def _few(names: list[str], most: int = 10) -> str:
    """The first `most` names, comma-separated, with ", ..." where there are more."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def _cmd_demo(args: argparse.Namespace) -> None:
    import time

    from selfsup.evaluate import format_table
    from selfsup.recipe import Recipe
    from selfsup.runs import evaluate_run, pretrain_run

    out = Path(args.out)
    if out.exists():
        import shutil

        shutil.rmtree(out)  # the demo always starts fresh
    started = time.perf_counter()
    recipe = Recipe.from_dict({**DEMO_RECIPE, "train": dict(DEMO_RECIPE["train"])})
    print("selfsup demo: SimCLR on scikit-learn's digits (labels hidden), then 10% labels")
    pretrain_run(recipe, out)
    results = evaluate_run(out, fractions=(0.1,), command="selfsup demo")
    print(format_table(results))
    print(f"demo finished in {time.perf_counter() - started:.0f} s; report: {out / 'report.md'}")


def _cmd_tasks() -> None:
    from selfsup.tasks import TASKS

    width = max(map(len, TASKS))
    for name, (_, description) in TASKS.items():
        print(f"{name:<{width}}  {description}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    command = "selfsup " + shlex.join(argv)
    try:
        if args.command == "pretrain":
            _cmd_pretrain(args)
        elif args.command == "evaluate":
            _cmd_evaluate(args, command)
        elif args.command == "embed":
            from selfsup.runs import embed_run

            if Path(args.out).is_dir():
                raise SelfSupError(
                    f"--out {args.out} is a directory; give the .npy file to write "
                    f"(e.g. {Path(args.out) / 'features.npy'})"
                )

            path, names, counts = embed_run(
                args.run, args.data, args.out, split=args.split, device=args.device
            )
            parts = ", ".join(f"{n} {part}" for part, n in counts.items())
            print(f"wrote {path} ({parts} rows) and {names} (which row is which)")
        elif args.command == "generate":
            from selfsup.recipe import load_run
            from selfsup.text.generate import generate_text

            task = load_run(args.run).task
            if task != "clm":
                raise SelfSupError(
                    f"{args.run} is a {task} run, not a clm run; generate samples from a causal "
                    "LM: selfsup pretrain --task clm --data text:PATH --out RUN"
                )

            for text in generate_text(
                args.run, args.prompt, tokens=args.tokens, samples=args.samples,
                temperature=args.temperature, top_k=args.top_k, seed=args.seed,
            ):  # fmt: skip
                print(text, end="\n\n")
        elif args.command == "finetune":
            _cmd_finetune(args)
        elif args.command == "predict":
            from selfsup.classifier import predict

            done = predict(
                args.classifier, args.data, args.out, split=args.split, device=args.device
            )
            scored = (
                f"; {done['accuracy']:.3f} right of the {done['labelled']} with labels"
                if done["accuracy"] is not None
                else ""
            )
            what = "texts" if done["kind"] == "text" else "images"
            if done["unknown_labels"]:
                # Else a low accuracy from differently spelt class names goes unexplained.
                print(
                    f"note: labels {_few(done['unknown_labels'])} are none of the classifier's "
                    f"classes ({_few(done['classes'])}); their rows count as wrong",
                    file=sys.stderr,
                )
            print(f"wrote {done['path']} ({done['rows']} {what}{scored})")
        elif args.command == "tasks":
            _cmd_tasks()
        elif args.command == "demo":
            _cmd_demo(args)
    except Interrupted as error:  # the shell's status for Ctrl-C, as when nothing was saved
        print(f"selfsup: {error}", file=sys.stderr)
        return 130
    except SelfSupError as error:
        print(f"selfsup: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfsup: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
