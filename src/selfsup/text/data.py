"""Tokenized text datasets with the engine's face: `len`, `labels` and `get_batch(indices)`.

`get_batch` returns the whole training batch as a dict of CPU tensors (the engine moves it to
the device). Token ids are held as one flat int32 tensor per dataset (plus offsets), filled
chunk by chunk while the corpus is streamed, so memory is ~4 bytes per token, not per string.
Randomness (NSP's random sentences) comes from torch's global generator, which the engine
seeds per step, so a resumed run makes the same batches.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from itertools import islice

import torch

from selfsup.backbones.transformer import PAD_ID
from selfsup.data.base import UNLABELED, BatchDataset
from selfsup.errors import DataError
from selfsup.text.tokenizer import TextTokenizer

CHUNK = 4096  # texts tokenized per call: big enough for the Rust batch encoder, small in memory


class TooFewTokens(DataError):
    """The text is shorter than one packed block."""


class Ragged:
    """Variable-length token sequences in one flat int32 tensor; seq i = flat[starts[i]:ends[i]]."""

    def __init__(self, flat: torch.Tensor, offsets: torch.Tensor) -> None:
        self.flat, self.offsets = flat, offsets

    @classmethod
    def from_lists(cls, chunks: Iterable[list[list[int]]]) -> Ragged:
        pieces, lengths = [], []
        for seqs in chunks:
            for seq in seqs:
                pieces.append(torch.tensor(seq, dtype=torch.int32))
                lengths.append(len(seq))
        flat = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int32)
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
        return cls(flat, offsets)

    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.flat[self.offsets[i] : self.offsets[i + 1]].long()

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]


def pad(seqs: list[torch.Tensor], length: int | None = None) -> torch.Tensor:
    """Right-pad int64 sequences with [PAD] to one (B, T) tensor (T = longest, or `length`)."""
    length = length or max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), length), PAD_ID, dtype=torch.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s[:length]
    return out


def _chunks(texts: Iterable[str], tokenizer: TextTokenizer) -> Iterator[list[list[int]]]:
    it = iter(texts)
    while batch := list(islice(it, CHUNK)):
        yield tokenizer.encode(batch)


class PackedText(BatchDataset):
    """A token stream cut into fixed-length blocks, as BERT/RoBERTa and GPT pretrain.

    Documents are joined with [SEP] (it doubles as GPT's end-of-text); an encoder's blocks start
    with [CLS]. Packing wastes no compute on padding.
    """

    name = "packed text"

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    @classmethod
    def build(
        cls,
        documents: Iterable[list[str]],
        tokenizer: TextTokenizer,
        seq_len: int,
        cls_token: bool,
    ) -> PackedText:
        stream = array("i")  # 4 bytes a token while the corpus streams in
        for ids in tokenized_documents(documents, tokenizer):
            stream.extend(ids)
            stream.append(tokenizer.sep_id)
        body = seq_len - 1 if cls_token else seq_len
        n = len(stream) // body
        if n == 0:
            raise TooFewTokens(
                f"the corpus has {len(stream)} tokens, fewer than one block of {body}; "
                "add text or lower text.seq_len"
            )
        blocks = torch.frombuffer(stream, dtype=torch.int32)[: n * body].clone().view(n, body)
        if cls_token:
            first = torch.full((n, 1), tokenizer.cls_id, dtype=torch.int32)
            blocks = torch.cat([first, blocks], 1)
        return cls(blocks)

    def __len__(self) -> int:
        return self.blocks.shape[0]

    @property
    def labels(self) -> torch.Tensor:
        return torch.full((len(self),), UNLABELED, dtype=torch.int64)

    def num_tokens(self) -> int:
        return self.blocks.numel()

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"tokens": self.blocks[indices].long()}


def tokenized_documents(
    documents: Iterable[list[str]], tokenizer: TextTokenizer
) -> Iterator[list[int]]:
    """Each document's token ids (its sentences concatenated), tokenized a chunk at a time."""
    it = iter(documents)
    while docs := list(islice(it, 256)):
        ids = tokenizer.encode([sentence for doc in docs for sentence in doc])
        k = 0
        for doc in docs:
            yield [t for seq in ids[k : k + len(doc)] for t in seq]
            k += len(doc)


class SentencePairs(BatchDataset):
    """NSP pairs `[CLS] A [SEP] B [SEP]`: B is A's true next sentence (label 1) or a random
    sentence of another document (label 0), each with probability 1/2, drawn per batch."""

    name = "sentence pairs"

    def __init__(self, sentences: Ragged, doc_ids: torch.Tensor, tokenizer, max_len: int):
        self.sentences, self.doc_ids, self.max_len = sentences, doc_ids, max_len
        self.cls_id, self.sep_id = tokenizer.cls_id, tokenizer.sep_id
        # Sample i is sentence firsts[i] as A; it must have a next sentence in its document.
        self.firsts = torch.nonzero(doc_ids[:-1] == doc_ids[1:]).flatten()
        if self.firsts.numel() == 0 or int(doc_ids.max()) < 1:
            raise DataError(
                "next sentence prediction needs documents of at least two sentences and at least "
                "two documents; use text:PATH with blank lines between documents"
            )

    @classmethod
    def build(cls, documents: Iterable[list[str]], tokenizer, max_len: int) -> SentencePairs:
        doc_ids: list[int] = []

        def texts() -> Iterator[str]:
            for d, doc in enumerate(documents):
                doc_ids.extend([d] * len(doc))
                yield from doc

        sentences = Ragged.from_lists(_chunks(texts(), tokenizer))
        return cls(sentences, torch.tensor(doc_ids, dtype=torch.int64), tokenizer, max_len)

    def __len__(self) -> int:
        return self.firsts.shape[0]

    @property
    def labels(self) -> torch.Tensor:
        return torch.full((len(self),), UNLABELED, dtype=torch.int64)

    def random_other_document(self, a: torch.Tensor) -> torch.Tensor:
        """A random sentence index for each A whose document differs from A's."""
        n = len(self.sentences)
        b = torch.randint(0, n, a.shape)
        same = self.doc_ids[b] == self.doc_ids[a]
        while bool(same.any()):  # rejection: few redraws, documents are many
            b[same] = torch.randint(0, n, (int(same.sum()),))
            same = self.doc_ids[b] == self.doc_ids[a]
        return b

    def pairs(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A sentence index, B sentence index, is_next label) for these samples."""
        a = self.firsts[indices]
        is_next = torch.rand(a.shape) < 0.5
        b = torch.where(is_next, a + 1, self.random_other_document(a))
        return a, b, is_next.long()

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        a, b, is_next = self.pairs(indices)
        tokens, segments = [], []
        for i, j in zip(a.tolist(), b.tolist(), strict=True):
            first, second = _truncate_pair(self.sentences[i], self.sentences[j], self.max_len - 3)
            cls_, sep = torch.tensor([self.cls_id]), torch.tensor([self.sep_id])
            tokens.append(torch.cat([cls_, first, sep, second, sep]))
            segments.append(torch.cat([torch.zeros(len(first) + 2), torch.ones(len(second) + 1)]))
        return {
            "tokens": pad(tokens),
            "segments": pad([s.long() for s in segments]),
            "nsp_labels": is_next,
        }


def _truncate_pair(a: torch.Tensor, b: torch.Tensor, budget: int):
    """BERT's rule: drop tokens from the end of the longer sentence until the pair fits."""
    la, lb = len(a), len(b)
    while la + lb > budget:
        if la >= lb:
            la -= 1
        else:
            lb -= 1
    return a[:la], b[:lb]


class ParallelText(BatchDataset):
    """Aligned sentence pairs (src, tgt), each right-padded; the task builds its views."""

    name = "parallel text"

    def __init__(self, src: Ragged, tgt: Ragged, lang_ids: tuple[int, int], max_len: int) -> None:
        self.src, self.tgt, self.lang_ids, self.max_len = src, tgt, lang_ids, max_len

    @classmethod
    def build(cls, left, right, tokenizer, langs: tuple[str, str], max_len: int) -> ParallelText:
        missing = [lang for lang in langs if lang not in tokenizer.langs]
        if missing:
            raise DataError(f"the tokenizer has no language tag for {missing}; retrain it")
        src = Ragged.from_lists(_chunks(left, tokenizer))
        tgt = Ragged.from_lists(_chunks(right, tokenizer))
        lang_ids = (tokenizer.langs.index(langs[0]), tokenizer.langs.index(langs[1]))
        return cls(src, tgt, lang_ids, max_len)

    def __len__(self) -> int:
        return len(self.src)

    @property
    def labels(self) -> torch.Tensor:
        return torch.full((len(self),), UNLABELED, dtype=torch.int64)

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        # Each side keeps at most half the budget so a concatenated pair fits in max_len.
        half = self.max_len // 2 - 2  # [CLS] and [SEP] around each side
        idx = indices.tolist()
        return {
            "src": pad([self.src[i][:half] for i in idx]),
            "tgt": pad([self.tgt[i][:half] for i in idx]),
            "langs": torch.tensor(self.lang_ids),  # language-embedding ids of src and tgt
        }


class LabeledText(BatchDataset):
    """Single texts with labels for downstream classification, framed as the model reads them:
    `[CLS] text [SEP]` for an encoder, `text [SEP]` for a decoder (GPT classifies the state of
    the final token)."""

    name = "labelled text"
    notes: tuple[str, ...] = ()  # what reading the table left out, for the evaluation's report

    def __init__(self, texts: Ragged, labels: torch.Tensor, classes: list[str], raw: list[str]):
        self.texts, self._labels, self.classes, self.raw = texts, labels, classes, raw

    @classmethod
    def build(
        cls,
        texts: list[str],
        labels: list[str] | None,
        tokenizer: TextTokenizer,
        max_len: int,
        encoder: bool,
        classes: list[str] | None = None,
    ) -> LabeledText:
        ids = []
        for seq in (s for chunk in _chunks(texts, tokenizer) for s in chunk):
            body = seq[: max_len - (2 if encoder else 1)]
            ids.append(([tokenizer.cls_id] if encoder else []) + body + [tokenizer.sep_id])
        ragged = Ragged.from_lists([ids])
        if labels is None:
            return cls(ragged, torch.full((len(texts),), UNLABELED), classes or [], texts)
        classes = classes or sorted(set(labels), key=_natural)
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataError(
                f"labels {unknown[:5]} do not occur in the training data's labels "
                f"{classes[:10]}; add training rows with them or drop the rows that have them"
            )
        label_ids = torch.tensor([index[label] for label in labels], dtype=torch.int64)
        return cls(ragged, label_ids, classes, texts)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    def subset(self, indices: torch.Tensor) -> LabeledText:
        idx = indices.tolist()
        ids = [self.texts[i].tolist() for i in idx]
        return LabeledText(
            Ragged.from_lists([ids]),
            self._labels[indices],
            self.classes,
            [self.raw[i] for i in idx],
        )

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "tokens": pad([self.texts[i] for i in indices.tolist()]),
            "labels": self._labels[indices],
        }


def _natural(label: str):
    return (0, int(label)) if label.lstrip("-").isdigit() else (1, label)
