"""The vocabulary stage: tokenizer, Misra-Gries counts within the stated bound, bounded
memory, encoding, and the raw-text path from a file to CSR rows (issue 18).

The real text is 20 Newsgroups (the shared ``20newsgroups-bow`` corpus): each document
rebuilt from its word counts in a shuffled order, so word frequencies are the real
corpus's. References are exact counts by ``collections.Counter`` over Python's own
``re.findall`` tokens and rows built directly with scipy.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import reduce

import apache_beam as beam
import numpy as np
import pytest
import scipy.sparse as sp

from beam_ml.algorithms.vocabulary import (
    EncodeDocuments,
    VocabularyConfig,
    VocabularyModel,
    VocabularyState,
    load_vocabulary,
    pack_words,
    tokenize,
    unpack_words,
    vocabulary_of,
)
from beam_ml.cli.main import main
from beam_ml.core.errors import BadInputError
from beam_ml.core.state import load_model, load_state
from beam_ml.io import ReadBlocks, read_blocks_local
from beam_ml.io.formats.documents import DocumentBlock
from tests.conftest import data_path, direct_options
from tests.io.test_readers import _load, _save


@pytest.fixture(scope="module")
def newsgroups() -> list[str]:
    """3,000 20 Newsgroups documents as text (their words, shuffled)."""
    folder = data_path("20newsgroups-bow")
    words = np.array([line.split()[0] for line in open(folder / "vocab.new")])
    rng = np.random.default_rng(7)
    docs = []
    with open(folder / "train.feat") as f:
        for line, _ in zip(f, range(3000), strict=False):
            pairs = np.array([p.split(":") for p in line.split()[1:]], dtype=np.int64)
            tokens = np.repeat(words[pairs[:, 0] - 1], pairs[:, 1])
            rng.shuffle(tokens)
            docs.append(" ".join(tokens))
    return docs


def python_tokens(text: str, min_length: int = 2) -> list[str]:
    return [t for t in re.findall(r"\w+", text.lower()) if len(t) >= min_length]


def exact_counts(docs: list[str]) -> Counter:
    return Counter(t for doc in docs for t in python_tokens(doc))


def check_bound(state: VocabularyState, truth: Counter) -> None:
    """The stated guarantees, word by word, against the exact counts."""
    n, k = sum(truth.values()), state.config.sketch_size
    assert state.n_tokens == n
    assert len(state.words) <= k
    assert state.error <= (n - state.counts.sum()) / (k + 1) <= n / (k + 1)
    words = list(truth)
    kept = state.count_of(words)
    true = np.array([truth[w] for w in words])
    assert (kept <= true).all() and (true <= kept + state.error).all()
    assert set(state.words.to_pylist()) <= set(words)
    assert all(kept[true > n / (k + 1)] > 0)  # the heavy hitters are all kept


TEXT = (
    "Don't stop-believing! Ünïcode ÉCOLE straße x_y 42 a1 ½ I  A\tno.\n"
    "e-mail: someone@example.com  http://x.org/a?b=c  naïve café 3.14"
)


def test_tokenizer_matches_python_findall():
    doc, tokens = tokenize(DocumentBlock.from_texts([TEXT, "", "ab ab"]), VocabularyConfig())
    expected = python_tokens(TEXT) + ["ab", "ab"]
    assert tokens.to_pylist() == expected
    assert doc.tolist() == [0] * len(python_tokens(TEXT)) + [2, 2]
    config = VocabularyConfig(
        lowercase=False, token_pattern="[a-z]+", min_length=3, stop_words="stop, com"
    )
    _, tokens = tokenize(DocumentBlock.from_texts([TEXT]), config)
    reference = [t for t in re.findall("[a-z]+", TEXT) if len(t) >= 3 and t not in ("stop", "com")]
    assert tokens.to_pylist() == reference
    # any other pattern: found left to right, as re.findall finds them
    pattern = r"\d+(?:\.\d+)?|[a-z]{2,}"
    _, tokens = tokenize(DocumentBlock.from_texts([TEXT]), VocabularyConfig(token_pattern=pattern))
    assert tokens.to_pylist() == [t for t in re.findall(pattern, TEXT.lower()) if len(t) >= 2]
    # tokens longer than max_token_bytes are not words (URLs, encoded data)
    _, tokens = tokenize(DocumentBlock.from_texts(["ab " + "x" * 41]), VocabularyConfig())
    assert tokens.to_pylist() == ["ab"]


def test_config_is_checked():
    with pytest.raises(ValueError, match="'sketch_size' parameter of VocabularyConfig"):
        VocabularyConfig(sketch_size=0)
    with pytest.raises(ValueError, match="'token_pattern' parameter .* RE2"):
        VocabularyConfig(token_pattern="(unclosed")
    state = VocabularyState(VocabularyConfig()).update(["a bb"])
    with pytest.raises(ValueError, match="'max_vocabulary' parameter of vocabulary.derive"):
        state.derive(max_vocabulary=0)


def test_counts_within_the_stated_bound_on_real_text(newsgroups):
    truth = exact_counts(newsgroups)
    config = VocabularyConfig(sketch_size=300)
    state = VocabularyState(config)
    for start in range(0, len(newsgroups), 250):
        state.update(newsgroups[start : start + 250])
    assert state.error > 0  # 1,994 words into 300 counters: the sketch did reduce
    check_bound(state, truth)
    # shards merged in any tree: the same guarantees
    shards = [VocabularyState(config).update(newsgroups[i::4]) for i in range(4)]
    merged = reduce(lambda a, b: a.merge(b), shards)
    check_bound(merged, truth)
    tree = shards[3].merge(shards[0]).merge(shards[2].merge(shards[1]))
    check_bound(tree, truth)
    # the words said to be certain are in the true top 50
    model = state.derive(max_vocabulary=50)
    assert len(model) == 50 and model.n_certain > 0
    for word in model.words[: model.n_certain]:
        assert sum(count > truth[word] for count in truth.values()) < 50, word


def test_exact_when_the_sketch_holds_every_word(newsgroups):
    docs = newsgroups[:500]
    truth = exact_counts(docs)
    state = VocabularyState(VocabularyConfig(sketch_size=5000)).update(docs)
    assert state.error == 0
    assert dict(zip(state.words.to_pylist(), state.counts.tolist(), strict=True)) == truth
    model = state.derive(max_vocabulary=100, min_count=2)
    top = sorted(truth.items(), key=lambda item: (-item[1], item[0]))[:100]
    assert model.words == [w for w, _ in top]
    assert model.n_certain <= 100


def test_memory_does_not_grow_with_documents(newsgroups):
    config = VocabularyConfig(sketch_size=200)
    small = VocabularyState(config).update(newsgroups[:100])
    large = VocabularyState(config)
    for start in range(0, 3000, 300):
        large.update(newsgroups[start : start + 300])
    for state in (small, large):
        assert len(state.words) <= 200
        assert state.words.nbytes <= 200 * (config.max_token_bytes + 4) + 8
    assert len(large.to_bytes()) <= len(small.to_bytes()) + 16  # only header digits grow
    assert load_state(large.to_bytes()).to_bytes() == large.to_bytes()


def test_encode_matches_counter_rows(newsgroups):
    docs = newsgroups[:300]
    model = (
        VocabularyState(VocabularyConfig(sketch_size=1000)).update(docs).derive(max_vocabulary=400)
    )
    column = {w: j for j, w in enumerate(model.words)}
    rows, cols, vals = [], [], []
    for i, doc in enumerate(docs):
        for word, count in Counter(python_tokens(doc)).items():
            if word in column:
                rows.append(i)
                cols.append(column[word])
                vals.append(count)
    expected = sp.csr_matrix((vals, (rows, cols)), shape=(300, 400), dtype=np.float32)
    block = model.encode(DocumentBlock.from_texts(docs, origin=("d.txt", 5)))
    assert block.origin == ("d.txt", 5) and block.labels is None
    assert block.features.dtype == np.float32 and block.features.has_sorted_indices
    assert abs(block.features - expected).max() == 0
    coverage = model.score("coverage", docs)
    assert coverage == pytest.approx(expected.sum() / sum(len(python_tokens(d)) for d in docs))
    again = load_model(model.to_bytes())
    assert isinstance(again, VocabularyModel) and again.words == model.words


def test_raw_text_file_to_vocabulary_to_csr_rows(newsgroups, tmp_path, capsys):
    """beam-ml train vocabulary, then derive; the model (or the state) encodes the same
    text file, read by format 'text', in a Beam pipeline."""
    docs = newsgroups[:400]
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(docs) + "\n")
    state_dir, model_dir = str(tmp_path / "vstate"), str(tmp_path / "vmodel")
    args = ["--input", str(path), "--format", "text", "--output", state_dir]
    assert main(["--quiet", "train", "vocabulary", *args, "--sketch_size", "600"]) == 0
    assert (
        main(["--quiet", "derive", state_dir, "--output", model_dir, "--max_vocabulary", "300"])
        == 0
    )
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed[0]["n_seen"] == 400 and printed[1]["n_words"] == 300
    model = load_vocabulary(model_dir)
    assert len(model) == 300
    assert load_vocabulary(state_dir).words[:300] != []  # a state is derived on load
    expected = model.encode(docs).features

    out = tmp_path / "blocks"
    out.mkdir()
    with beam.Pipeline(options=direct_options()) as p:
        blocks = p | ReadBlocks(str(path), "text", block_size=64) | EncodeDocuments(model_dir)
        _ = blocks | beam.Map(_save, str(out))
    blocks = sorted(_load(out), key=lambda b: b.origin[1])
    assert [b.origin[1] for b in blocks][0] == 0
    got = sp.vstack([b.features for b in blocks], format="csr")
    assert got.shape == (400, 300) and abs(got - expected).max() == 0
    # the local reader gives documents in order too
    local = list(read_blocks_local(str(path), "text", block_size=100))
    assert sum(b.n_rows for b in local) == 400 and local[0].to_list()[0] == docs[0]
    with pytest.raises(BadInputError, match="holds a pca|not a vocabulary"):
        from beam_ml import PCAConfig, PCAState
        from beam_ml.io.checkpoints import write_checkpoint

        pca_dir = str(tmp_path / "pca")
        write_checkpoint(pca_dir, PCAState(PCAConfig(num_components=1)).update(np.eye(3)))
        load_vocabulary(pca_dir)


def test_text_formats_set_bad_records_aside(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_bytes(b"first doc\n\n   \nbad \xff byte\nlast one  ")
    dead: list = []
    blocks = list(read_blocks_local(str(path), "text", dead_letters=dead))
    assert [b.to_list() for b in blocks] == [["first doc", "last one"]]
    assert [(d["line"], d["reason"]) for d in dead] == [
        (4, "not UTF-8 text: byte 4 of the line is 0xff")
    ]
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "a b", "id": 1}\n{"id": 2}\n{"text": 3}\nnot json\n{"text": "c"}\n')
    dead = []
    blocks = list(read_blocks_local(str(path), "text_jsonl", dead_letters=dead))
    assert [b.to_list() for b in blocks] == [["a b", "c"]]
    reasons = {d["line"]: d["reason"] for d in dead}
    assert reasons[2] == "no 'text' field" and "is a int, not a string" in reasons[3]
    assert reasons[4].startswith("not a JSON object")
    path.write_text('{"body": "x y", "text": "no"}\n')
    blocks = list(read_blocks_local(str(path), "text_jsonl", features_key="body"))
    assert blocks[0].to_list() == ["x y"]
    with pytest.raises(BadInputError, match="feature_dim does not apply"):
        ReadBlocks(str(path), "text", feature_dim=3)


def test_words_travel_as_numeric_arrays_and_encode_again():
    """What a model that carries its vocabulary (NTM) stores, and how it encodes again."""
    words = ["café", "ab", "", "straße", "zz"]
    arrays = pack_words(words)
    assert {a.dtype.kind for a in arrays.values()} <= {"u", "i"}
    assert unpack_words(arrays).to_pylist() == words
    assert unpack_words(pack_words([])).to_pylist() == []
    damaged = dict(arrays, word_ends=arrays["word_ends"] + 100)
    with pytest.raises(Exception, match="damaged"):
        unpack_words(damaged)
    rows = vocabulary_of(["zz", "café"]).encode(["Café zz ZZ other"]).features
    assert rows.toarray().tolist() == [[2.0, 1.0]]
