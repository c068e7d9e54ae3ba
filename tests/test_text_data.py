"""Text data: tokenizers, corpora, packing and NSP's free labels, on real data slices."""

from __future__ import annotations

import gzip
from itertools import islice

import pytest
import torch

from selfsup.errors import DataError, SelfSupError
from selfsup.text.corpus import (
    iter_documents,
    iter_table,
    parse_text_spec,
    plain_documents,
    read_parallel,
    read_table,
)
from selfsup.text.data import PackedText, SentencePairs
from selfsup.text.tokenizer import load_tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shakespeare(shared_data):
    return shared_data / "tinyshakespeare" / "input.txt"


@pytest.fixture(scope="module")
def wordpiece(shakespeare):
    lines = (s for doc in islice(iter_documents(shakespeare), 1500) for s in doc)
    return train_tokenizer(lines, "wordpiece", vocab_size=800)


def test_wordpiece_specials_and_reload(wordpiece, tmp_path):
    assert wordpiece.pad_id == 0  # zero-filled tensors are padding
    ids = wordpiece.encode(["First Citizen: speak, speak."])[0]
    assert ids and wordpiece.unk_id not in ids
    assert wordpiece.decode(ids).replace(" ", "") == "firstcitizen:speak,speak."
    wordpiece.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode(["hear me speak"]) == wordpiece.encode(["hear me speak"])
    assert (again.cls_id, again.sep_id, again.mask_id) == (
        wordpiece.cls_id,
        wordpiece.sep_id,
        wordpiece.mask_id,
    )


def test_byte_bpe_round_trips_any_text_and_keeps_language_tags():
    texts = ["Zwei junge Männer sind im Freien.", "Two young men are outside."] * 50
    tok = train_tokenizer(texts, "bpe", vocab_size=300, langs=["en", "de"])
    assert tok.langs == ["en", "de"]
    assert len(tok.special_ids) == 7
    unseen = "Ünïcødé ✓ never seen"
    assert tok.decode(tok.encode([unseen])[0]) == unseen  # byte-level: nothing is unknown


def test_plain_text_documents_split_on_blank_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a one\na two\n\n\nb one\n\nc one\nc two\nc three\n")
    assert list(iter_documents(path)) == [
        ["a one", "a two"],
        ["b one"],
        ["c one", "c two", "c three"],
    ]
    train, test = list(plain_documents(path, "train")), list(plain_documents(path, "test"))
    assert train + test == list(iter_documents(path)) and len(test) == 1


def test_tables_pick_columns_and_name_missing_ones(shared_data, tmp_path):
    texts, labels = read_table(shared_data / "sst2" / "dev.tsv", "\t")
    assert len(texts) == len(labels) == 872 and set(labels) == {"0", "1"}
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('id,body,stars\n1,"good, really",5\n2,bad,1\n')
    texts, labels = read_table(csv_path, ",", text_column="body", label_column="stars")
    assert texts == ["good, really", "bad"] and labels == ["5", "1"]
    with pytest.raises(DataError, match="no text column 'review'"):
        read_table(csv_path, ",", text_column="review")
    with pytest.raises(DataError, match="no text column"):
        read_table(csv_path, ",")
    empty = tmp_path / "e.tsv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_table(empty, "\t")


def test_table_rows_with_extra_fields_name_the_line_and_the_cause(tmp_path):
    path = tmp_path / "b4.tsv"
    path.write_text("sentence\tlabel\ngood\t1\nok\t0\t\na film with\ttab inside\t1\n")
    with pytest.raises(DataError, match=r"b4\.tsv line 4 has 3 fields but the header has 2; "
                       r"probably a tab inside the text") as error:  # fmt: skip
        read_table(path, "\t")
    assert "\n" not in str(error.value)
    path.write_text("sentence\tlabel\ngood\t1\nok\t0\t\n")  # a trailing tab adds no data
    assert read_table(path, "\t") == (["good", "ok"], ["1", "0"])
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("text,label\nfine, really,1\n")
    with pytest.raises(DataError, match="line 2 has 3 fields.*double quotes"):
        read_table(csv_path, ",")


def test_parallel_files_must_align(tmp_path, shared_data):
    en, de = tmp_path / "x.en.gz", tmp_path / "x.de.gz"
    with gzip.open(en, "wt") as f:
        f.write("one\ntwo\n")
    with gzip.open(de, "wt") as f:
        f.write("eins\n")
    with pytest.raises(DataError, match="misaligned"):
        read_parallel(en, de)
    spec = parse_text_spec(
        f"parallel:{shared_data}/multi30k/val.en.gz,{shared_data}/multi30k/val.de.gz"
    )
    left, right = read_parallel(*spec.paths)
    assert len(left) == len(right) == 1014


def test_bad_specs_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="not found"):
        parse_text_spec(f"text:{tmp_path}/missing.txt")
    with pytest.raises(SelfSupError, match="parallel:A,B"):
        parse_text_spec(f"parallel:{tmp_path}/only_one.en")
    with pytest.raises(DataError, match="is a directory; give a file"):
        parse_text_spec(f"text:{tmp_path}")
    # A comma-separated file given as tsv (or the reverse) says which kind it looks like.
    (tmp_path / "a.csv").write_text("text,label\ngood film,1\n")
    with pytest.raises(DataError, match=r"looks like a csv file; give it as csv:"):
        list(iter_table(tmp_path / "a.csv", "\t"))
    (tmp_path / "a.tsv").write_text("text\tlabel\ngood film\t1\n")
    with pytest.raises(DataError, match=r"looks like a tsv file; give it as tsv:"):
        list(iter_table(tmp_path / "a.tsv", ","))


def test_packed_blocks_start_with_cls_and_join_documents_with_sep(shakespeare, wordpiece):
    docs = list(islice(iter_documents(shakespeare), 200))
    packed = PackedText.build(docs, wordpiece, seq_len=32, cls_token=True)
    assert packed.blocks.shape[1] == 32 and (packed.blocks[:, 0] == wordpiece.cls_id).all()
    body = packed.blocks[:, 1:].flatten()
    assert 0 < int((body == wordpiece.sep_id).sum()) <= len(docs)  # one per document
    first_doc = wordpiece.encode(docs[0])
    expected = [t for s in first_doc for t in s] + [wordpiece.sep_id]
    assert body[: len(expected)].tolist() == expected
    with pytest.raises(DataError, match="fewer than one block"):
        PackedText.build(docs[:1], wordpiece, seq_len=4096, cls_token=False)


def test_nsp_pairs_are_true_next_sentences_exactly_when_labelled(shakespeare, wordpiece):
    docs = list(islice(iter_documents(shakespeare), 400))
    pairs = SentencePairs.build(docs, wordpiece, max_len=64)
    sentence_doc = [d for d, doc in enumerate(docs) for _ in doc]
    torch.manual_seed(0)
    a, b, is_next = pairs.pairs(torch.arange(len(pairs)))
    positive = is_next == 1
    assert 0.45 < positive.float().mean() < 0.55
    # Positive: B is the very next sentence of A, in the same document.
    assert (b[positive] == a[positive] + 1).all()
    doc = torch.tensor(sentence_doc)
    assert (doc[a[positive]] == doc[b[positive]]).all()
    # Negative: B comes from another document (so it is never A's next sentence).
    assert (doc[a[~positive]] != doc[b[~positive]]).all()
    batch = pairs.get_batch(torch.arange(8))
    tokens, segments = batch["tokens"], batch["segments"]
    assert (tokens[:, 0] == wordpiece.cls_id).all() and tokens.shape[1] <= 64
    assert ((tokens == wordpiece.sep_id).sum(1) == 2).all()
    # Segment 1 starts right after the first [SEP] and covers B and the final [SEP].
    first_sep = (tokens == wordpiece.sep_id).int().argmax(1)
    for row, sep in enumerate(first_sep.tolist()):
        assert (segments[row, : sep + 1] == 0).all() and segments[row, sep + 1] == 1


def test_nsp_needs_documents(wordpiece):
    with pytest.raises(DataError, match="at least two sentences"):
        SentencePairs.build([["one line"], ["another"]], wordpiece, max_len=32)


def test_tokenizer_training_is_reproducible(shakespeare):
    """Same corpus, same ids (ids are renumbered canonically after training). Byte-level BPE
    is exact; `tokenizers`' WordPiece trainer breaks ties between equally frequent merges in
    hash-map order, so a few rare tokens at the vocabulary cutoff may differ between
    trainings (a resumed run always reloads the saved tokenizer)."""
    texts = [s for doc in islice(iter_documents(shakespeare), 300) for s in doc]
    a = train_tokenizer(texts, "bpe", vocab_size=400, langs=["en", "de"])
    b = train_tokenizer(texts, "bpe", vocab_size=400, langs=["en", "de"])
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    a = train_tokenizer(texts, "wordpiece", vocab_size=400)
    b = train_tokenizer(texts, "wordpiece", vocab_size=400)
    va, vb = a.tokenizer.get_vocab(), b.tokenizer.get_vocab()
    assert len(set(va) ^ set(vb)) <= 8
    assert all(va[t] == vb[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"))


def test_csv_quoted_newlines_byte_order_marks_and_physical_line_numbers(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(
        '\ufefftext,label\r\n"first line\r\nsecond, line",a\r\n"single",b\r\n'.encode()
    )
    texts, labels = read_table(path, ",")  # the BOM is not part of the first column's name
    assert texts == ["first line\r\nsecond, line", "single"] and labels == ["a", "b"]
    path.write_text('text,label\n"one\ntwo\nthree",a\nfine, really,b\n')
    with pytest.raises(DataError, match=r"q\.csv line 5 has 3 fields"):
        read_table(path, ",")
    gz = tmp_path / "b.tsv.gz"
    with gzip.open(gz, "wb") as f:
        f.write("\ufeffsentence\tlabel\ngood\t1\n".encode())
    assert read_table(gz, "\t") == (["good"], ["1"])
    plain = tmp_path / "bom.txt"
    plain.write_bytes("\ufeffHello\n".encode())
    assert list(iter_documents(plain)) == [["Hello"]]
