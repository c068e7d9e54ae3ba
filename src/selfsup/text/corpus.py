"""Text corpora on disk -> streams of strings. Nothing here tokenizes or holds a file whole.

Three shapes, named by a data spec:
  text:PATH              plain text: documents are separated by blank lines, one sentence per
                         line. Split "train" is the first 90% of documents, "test" the rest.
  tsv:PATH[,TEST] / csv:PATH[,TEST]
                         a table with a header and a text column (and optionally a label
                         column); TEST, when given, is the held-out file.
  parallel:A,B           two aligned files, line i of A translates line i of B; the language of
                         each is the suffix of its name (train.en.gz -> en).
Every path may end in .gz.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from selfsup.errors import DataError, SelfSupError

TEXT_SPECS: dict[str, str] = {
    "text": "text:PATH - plain text; blank lines separate documents, one sentence per line",
    "tsv": "tsv:PATH[,TEST] - tab-separated table with a header; text (and label) column",
    "csv": "csv:PATH[,TEST] - comma-separated table with a header; text (and label) column",
    "parallel": "parallel:A,B - two aligned files, one sentence per line (e.g. train.en.gz)",
}
TEST_FRACTION = 0.1  # plain text has no split of its own: the last 10% of documents is held out
TEXT_COLUMNS = ("sentence", "text", "review", "content")
LABEL_COLUMNS = ("label", "labels", "class", "target")


class MissingColumn(DataError):
    """A table lacks the text or label column asked for; `problem` is the message without
    its fix, so a caller that cannot take the fix (evaluate, embed) can give its own."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


@dataclass
class TextSpec:
    kind: str
    paths: list[Path]
    options: dict = field(default_factory=dict)


def is_text_spec(spec: str) -> bool:
    return spec.partition(":")[0].strip().lower() in TEXT_SPECS


def parse_text_spec(spec: str) -> TextSpec:
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in TEXT_SPECS:
        raise SelfSupError(f"unknown text data spec {spec!r}; valid kinds: {', '.join(TEXT_SPECS)}")
    paths = [Path(p).expanduser() for p in rest.split(",") if p.strip()]
    wanted = {"text": (1, 1), "tsv": (1, 2), "csv": (1, 2), "parallel": (2, 2)}[kind]
    if not wanted[0] <= len(paths) <= wanted[1]:
        raise SelfSupError(f"data spec {spec!r}: expected {TEXT_SPECS[kind]}")
    for path in paths:
        if path.is_dir():
            raise DataError(f"{kind} data {path} is a directory; give a file: {kind}:{path}/FILE")
        if not path.is_file():
            raise DataError(f"{kind} data file {path} not found; check the path in {spec!r}")
    return TextSpec(kind, paths)


def open_text(path: str | Path, newline: str | None = None) -> io.TextIOBase:
    """A text stream over a plain or gzip file, strict UTF-8 with a clear error on bad bytes.
    utf-8-sig: editors on Windows start files with a byte-order mark, which is not text."""
    path = Path(path)
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline=newline)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Decoding and gzip failures as one-line DataErrors."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason}); convert it first") from None
    except (OSError, EOFError) as error:
        raise DataError(f"{path} could not be read ({error}); is it a corrupt .gz?") from None


def _lines(path: Path) -> Iterator[str]:
    with _reading(path), open_text(path) as f:
        for line in f:
            yield line.rstrip("\n")


def _records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(physical line the record starts on, fields) per record of a tsv/csv file."""
    if delimiter == "\t":
        # TSV files such as GLUE's are unquoted: quotes are text, not field delimiters, and a
        # record is a line.
        with _reading(path):
            reader = csv.reader(_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE)
            yield from enumerate(reader, start=1)
        return
    # CSV quotes may hold newlines: csv reads the stream itself (newline="", as its docs ask).
    with _reading(path), open_text(path, newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        start = 1
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def iter_documents(path: str | Path) -> Iterator[list[str]]:
    """Documents (lists of non-empty sentence lines), split on blank lines, streamed."""
    document: list[str] = []
    for line in _lines(path):
        if line.strip():
            document.append(line.strip())
        elif document:
            yield document
            document = []
    if document:
        yield document


def count_documents(path: Path) -> int:
    return sum(1 for _ in iter_documents(path))


def plain_documents(path: Path, split: str) -> Iterator[list[str]]:
    """The documents of one split of a plain-text file (train: first 90%, test: the rest)."""
    total = count_documents(path)
    if total == 0:
        raise DataError(f"{path} holds no text; point text:PATH at a non-empty file")
    cut = total - max(1, int(total * TEST_FRACTION)) if total > 1 else total
    for i, document in enumerate(iter_documents(path)):
        if (i < cut) == (split == "train"):
            yield document


def _pick(header: list[str], wanted: str | None, defaults: tuple[str, ...], path: Path, what: str):
    lowered = [h.strip().lower() for h in header]
    if wanted is not None:
        if wanted.lower() not in lowered:
            raise MissingColumn(
                f"{path} has no {what} column {wanted!r}; its columns are {', '.join(header)}",
                f"set text.{what}_column to one of them",
            )
        return lowered.index(wanted.lower())
    for name in defaults:
        if name in lowered:
            return lowered.index(name)
    return None


def iter_table(
    path: Path,
    delimiter: str,
    text_column: str | None = None,
    label_column: str | None = None,
) -> Iterator[tuple[str, str | None]]:
    """(text, raw label or None) per row of a table with a header, streamed."""
    records = _records(path, delimiter)
    header = next(records, (1, None))[1]
    if not header:
        raise DataError(f"{path} is empty; a table needs a header line and rows")
    text_i = _pick(header, text_column, TEXT_COLUMNS, path, "text")
    if text_i is None:
        # One tab-less column full of commas is a CSV read as TSV (or the reverse).
        other = {"\t": ("csv", ","), ",": ("tsv", "\t")}[delimiter]
        if len(header) == 1 and other[1] in header[0]:
            raise DataError(
                f"{path} has one column, which holds {other[1]!r}s: it looks like a "
                f"{other[0]} file; give it as {other[0]}:{path}"
            )
        raise MissingColumn(
            f"{path} has no text column (looked for {', '.join(TEXT_COLUMNS)}); its columns are "
            f"{', '.join(header)}",
            "set text.text_column",
        )
    label_i = _pick(header, label_column, LABEL_COLUMNS, path, "label")
    rows = 0
    for n, row in records:
        if not row:
            continue
        while len(row) > len(header) and not row[-1]:
            row.pop()  # trailing separators add empty fields, not data
        if len(row) > len(header):
            # Extra fields shift the columns: the rest of the text would be read as the label.
            cause = {"\t": "a tab inside the text: replace it with a space"}.get(
                delimiter, f"a {delimiter!r} inside the text: put that text in double quotes"
            )
            raise DataError(
                f"{path} line {n} has {len(row)} fields but the header has {len(header)}; "
                f"probably {cause}"
            )
        if len(row) <= max(text_i, label_i or 0):
            raise DataError(
                f"{path} line {n} has {len(row)} field(s) but the header has {len(header)}"
            )
        rows += 1
        yield row[text_i].strip(), (row[label_i].strip() if label_i is not None else None)
    if rows == 0:
        raise DataError(f"{path} has a header but no rows")


def read_table(
    path: Path,
    delimiter: str,
    text_column: str | None = None,
    label_column: str | None = None,
) -> tuple[list[str], list[str] | None]:
    """Texts (and raw label strings, or None when there is no label column) of a table."""
    rows = list(iter_table(path, delimiter, text_column, label_column))
    texts = [text for text, _ in rows]
    labels = [label for _, label in rows]
    return texts, (labels if labels[0] is not None else None)


def language_of(path: Path) -> str:
    """train.en.gz -> en; the suffix before an optional .gz names the language."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    suffix = Path(name).suffix.lstrip(".")
    if not suffix:
        raise DataError(f"cannot tell the language of {path}; name it like train.en or train.en.gz")
    return suffix


def read_parallel(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """Aligned sentence pairs; any difference in line count means misaligned files."""
    left, right = list(_lines(a)), list(_lines(b))
    if len(left) != len(right):
        raise DataError(
            f"parallel files are misaligned: {a} has {len(left)} lines, {b} has {len(right)}; "
            "line i of one must translate line i of the other"
        )
    if not left:
        raise DataError(f"parallel files {a} and {b} are empty")
    return left, right
