"""Tokenizers trained on the user's own corpus with the `tokenizers` library.

WordPiece for the encoder (BERT), byte-level BPE for the decoder (GPT-2: every byte string is
encodable, so generation never meets an unknown character). Both share the special tokens
below, so a task asks for `tokenizer.mask_id` without caring which kind it got. The trained
tokenizer is one JSON file in the run directory, reloaded by evaluate / generate / embed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from selfsup.errors import DataError, SelfSupError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIALS = [PAD, UNK, CLS, SEP, MASK]  # PAD first: id 0, so zero-filled tensors are padding
KINDS = ("wordpiece", "bpe")
TOKENIZER_FILE = "tokenizer.json"


def lang_tag(lang: str) -> str:
    return f"[{lang}]"


class TextTokenizer:
    """A trained `tokenizers.Tokenizer` plus the ids of the special tokens tasks need."""

    def __init__(self, tokenizer, kind: str) -> None:
        self.tokenizer, self.kind = tokenizer, kind
        ids = {t: tokenizer.token_to_id(t) for t in SPECIALS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise SelfSupError(f"tokenizer lacks special token(s) {missing}; train it again")
        self.pad_id, self.unk_id = ids[PAD], ids[UNK]
        self.cls_id, self.sep_id, self.mask_id = ids[CLS], ids[SEP], ids[MASK]
        # Language tags ([en], [de], ...) are special tokens too; their order is the language id.
        self.langs = [
            tok[1:-1]
            for tok, _ in sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=_by_id)
            if tok.startswith("[") and tok.endswith("]") and tok not in SPECIALS
        ]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> list[int]:
        """Ids never chosen as masking targets or random replacements."""
        tags = [self.tokenizer.token_to_id(lang_tag(lang)) for lang in self.langs]
        return [self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, *tags]

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (tasks add the ones they need)."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / TOKENIZER_FILE
        tmp = path.with_name(path.name + ".tmp")
        self.tokenizer.save(str(tmp))
        tmp.replace(path)
        return path


def _by_id(item: tuple[str, int]) -> int:
    return item[1]


def train_tokenizer(
    texts: Iterable[str],
    kind: str = "wordpiece",
    vocab_size: int = 8000,
    langs: Iterable[str] = (),
    lowercase: bool | None = None,
) -> TextTokenizer:
    """Train a tokenizer on an iterable of texts (consumed once, streamed, never held whole).

    `lowercase` defaults to True for WordPiece (BERT-uncased) and False for byte-level BPE.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if kind not in KINDS:
        raise SelfSupError(f"unknown tokenizer {kind!r}; choose one of: {', '.join(KINDS)}")
    if vocab_size < 64:
        raise SelfSupError(f"tokenizer vocab_size must be at least 64, got {vocab_size}")
    specials = SPECIALS + [lang_tag(lang) for lang in langs]
    counted = _Counted(texts)
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        lower = True if lowercase is None else lowercase
        tok.normalizer = normalizers.BertNormalizer(lowercase=lower)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False
        )
    else:
        tok = Tokenizer(models.BPE(unk_token=UNK))
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    tok.train_from_iterator(counted, trainer=trainer)
    if counted.count == 0:
        raise DataError("the corpus has no text to train a tokenizer on; check the data path")
    return TextTokenizer(_canonical_ids(tok, specials), kind)


def _canonical_ids(tok, specials: list[str]):
    """The same tokenizer with ids in a fixed order: specials first, then the rest sorted.

    The trainers hand out ids in hash-map order, which changes from process to process; a
    seeded run must get the same ids (and so the same initial embeddings) every time.
    Tokenization itself does not depend on ids (WordPiece matches strings, BPE merges pairs
    of strings), so this only renumbers.
    """
    import json

    from tokenizers import Tokenizer

    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    order = [t for t in specials if t in vocab] + sorted(set(vocab) - set(specials))
    data["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    for added in data.get("added_tokens", []):
        added["id"] = data["model"]["vocab"][added["content"]]
    return Tokenizer.from_str(json.dumps(data))


class _Counted:
    """An iterator that counts non-empty texts, so an empty corpus is reported clearly."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts, self.count = texts, 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            if text.strip():
                self.count += 1
                yield text


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """Reload a tokenizer saved with a run (its folder or the JSON file itself)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise SelfSupError(f"no tokenizer at {path}; a text run keeps it as {TOKENIZER_FILE}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001 - the library raises a bare Exception
        raise SelfSupError(f"{path} is not a readable tokenizer ({error}); retrain it") from None
    kind = "bpe" if type(tok.model).__name__ == "BPE" else "wordpiece"
    return TextTokenizer(tok, kind)
