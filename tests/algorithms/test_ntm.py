"""The Neural Topic Model: planted topics recovered, metrics against direct numpy
computations, merges of replicas measured, bad input, checkpoints and resume.

The merge figures are printed with ``pytest -s`` as lines starting with ``NTM-REPORT``.
"""

from __future__ import annotations

import dataclasses
from functools import reduce
from itertools import combinations

import numpy as np
import pytest
import scipy.sparse as sp

from beam_ml import BadInputError, Block, NotEnoughDataError, load_model, load_state
from beam_ml.algorithms.ntm import (
    NTMConfig,
    NTMModel,
    NTMState,
    _row_noise,
    npmi_coherence,
    topic_match,
    topic_uniqueness,
)
from beam_ml.nn.engine import DeviceUnavailableError
from beam_ml.nn.ntm import encoder_input, initial_parameters, parameter_shapes

pytestmark = pytest.mark.mxnet

K, V, PER = 5, 100, 20  # 5 planted topics of 20 words each


def _corpus(n: int, seed: int) -> sp.csr_matrix:
    """Documents drawn from planted topics: topic k is uniform over words
    [20k, 20k + 20), mixtures ~ Dirichlet(0.1), 30-60 words a document."""
    rng = np.random.default_rng(seed)
    topics = np.kron(np.eye(K), np.full((1, PER), 1.0 / PER))
    theta = rng.dirichlet(np.full(K, 0.1), n)
    lengths = rng.integers(30, 60, n)
    counts = np.stack([rng.multinomial(m, p) for m, p in zip(lengths, theta @ topics, strict=True)])
    return sp.csr_matrix(counts.astype(np.float32))


_CONFIG = NTMConfig(
    feature_dim=V,
    num_topics=K,
    optimizer="adam",
    learning_rate=0.01,
    encoder_layers_activation="tanh",
    mini_batch_size=64,
    epochs=1,
    validation_holdout=0.05,
    validation_sample_size=200,
    batch_norm=False,  # the network these tests write out (the decoder's bias, no dropout)
    dropout=0.0,
    adam_beta1=0.9,
)
TRAIN, TEST = _corpus(2000, 0), _corpus(500, 1)


def _fit(config: NTMConfig, docs: sp.csr_matrix, epochs: int, state: NTMState | None = None):
    state = state or NTMState(config)
    for epoch in range(epochs):
        if epoch:
            state = state.continued()
        state.update(docs)
    return state


@pytest.fixture(scope="module")
def trained() -> NTMState:
    return _fit(_CONFIG, TRAIN, 12)


def test_planted_topics_are_recovered(trained):
    model = trained.derive()
    top = model.top_words(10) // PER  # the planted topic of each top word
    # Each planted topic is the home of (nearly) all the top words of one learned topic.
    homes = [np.flatnonzero((top == k).mean(axis=1) >= 0.9) for k in range(K)]
    assert all(len(h) >= 1 for h in homes), model.top_words(10)
    assert model.topic_uniqueness() == pytest.approx(1.0)
    weights = model.topic_weights(TEST)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-9)
    assert weights.shape == (TEST.shape[0], K)


def _direct_perplexity(model, docs: sp.csr_matrix, draws: np.ndarray) -> float:
    """The ELBO written out in dense numpy, loops over documents and draws."""
    p = {k: v.astype(np.float64) for k, v in model.params.items()}
    x = docs.toarray().astype(np.float64)
    act = np.tanh
    total, prior = 0.0, 1.0 - 1.0 / K
    for d in range(x.shape[0]):
        h = np.log1p(x[d])
        if "input.norm" in p:  # a long document's input scaled down to the cap's norm
            h = h * min(1.0, p["input.norm"][0] / np.linalg.norm(h))
        for i in range(len(model.hidden_layers)):
            h = act(p[f"enc{i}.weight"] @ h + p[f"enc{i}.bias"])
        mu = p["mu.weight"] @ h + p["mu.bias"]
        logv = p["logv.weight"] @ h + p["logv.bias"]
        kl = 0.5 * np.sum(np.exp(logv) / prior + mu**2 / prior - 1 - logv + np.log(prior))
        recon = 0.0
        for eps in draws[:, d]:
            z = mu + np.exp(logv / 2) * eps
            theta = np.exp(z) / np.exp(z).sum()
            logits = theta @ p["topics"] + p["dec.bias"]
            log_p = logits - np.log(np.exp(logits).sum())
            recon += x[d] @ log_p / draws.shape[0]
        total += kl - recon
    return float(np.exp(total / x.sum()))


def test_perplexity_matches_a_direct_computation(trained):
    model = trained.derive()
    docs = TEST[:60]
    direct = _direct_perplexity(model, docs, _row_noise(docs, 8, K))
    assert model.score("perplexity", docs) == pytest.approx(direct, rel=1e-6)
    # A bound between the planted topics' floor and the uniform distribution.
    assert 15 < model.score("perplexity", TEST) < 60


def _direct_npmi(top_words: np.ndarray, docs: sp.csr_matrix, unseen: float = -1.0) -> np.ndarray:
    present = docs.toarray() > 0
    n = present.shape[0]
    scores = []
    for words in top_words:
        values = []
        for a, b in combinations(words, 2):
            joint = np.sum(present[:, a] & present[:, b]) / n
            if joint == 0:
                values.append(unseen)
                continue
            pa, pb = present[:, a].mean(), present[:, b].mean()
            values.append(np.log(joint / (pa * pb)) / -np.log(joint))
        scores.append(np.mean(values))
    return np.array(scores)


def test_npmi_tu_and_wetc_match_direct_computations(trained, rng):
    model = trained.derive()
    top = model.top_words(10)
    np.testing.assert_allclose(npmi_coherence(top, TEST, -1.0), _direct_npmi(top, TEST), rtol=1e-12)
    # The model's metric sums add up to the same NPMI, in any split of the documents.
    parts = [TEST[:123], TEST[123:400], TEST[400:]]
    sums: dict[str, float] = {}
    for part in parts:
        for name, value in model.metric_sums(part).items():
            sums[name] = sums.get(name, 0.0) + value
    npmi = model.metrics_from_sums(sums)["npmi_unseen_minus_1"]
    assert npmi == pytest.approx(_direct_npmi(top, TEST).mean(), rel=1e-12)
    assert npmi > 0.4  # planted topics: their words co-occur
    random_topics = rng.permuted(np.tile(np.arange(V), (K, 1)), axis=1)[:, :10]
    assert npmi_coherence(random_topics, TEST).mean() < npmi - 0.3
    few = TEST[:15]  # some pairs of a random topic's words never co-occur in 15 documents
    minus_one, zero = npmi_coherence(random_topics, few, -1.0), npmi_coherence(random_topics, few)
    assert minus_one.mean() < zero.mean()
    np.testing.assert_allclose(npmi_coherence(random_topics, few, unseen=0.0),
                               _direct_npmi(random_topics, few, unseen=0.0), rtol=1e-12)  # fmt: skip
    shared = np.array([[0, 1, 2], [0, 1, 3], [4, 5, 6]])
    assert topic_uniqueness(shared) == pytest.approx(np.mean([1 / 2, 1 / 2, 1, 1 / 2, 1 / 2, 1, 1, 1, 1]))  # fmt: skip
    vectors = rng.normal(size=(V, 8))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    direct = [np.mean([unit[a] @ unit[b] for a, b in combinations(ws, 2)]) for ws in top]
    np.testing.assert_allclose(model.wetc(vectors), direct, rtol=1e-12)
    assert 0.2 < model.heldout["npmi"] and model.heldout["n_rows"] == trained.sample.n_rows


def test_merges_of_replicas_measured():
    """2- and 4-way merges against one replica on all the documents (the same
    epochs, replicas re-merged after every epoch and the round finished, as TrainEpochs
    does). Measured (seed 0): one replica 49.4; 2-way 56.4, 4-way 81.2 (averaging only
    57.0 and 81.7): an average of r replicas makes about 1/r of the progress early in
    training, which finish_round's step scaling barely recovers here."""
    epochs = 6
    single = _fit(_CONFIG, TRAIN, epochs).derive().score("perplexity", TEST)
    results, averaged = {1: single}, {}
    for ways in (2, 4):
        state = NTMState(_CONFIG)
        for epoch in range(epochs):
            start = state.continued() if epoch else state
            replicas = [
                _fit(_CONFIG, part, 1, state=start._copy())
                for part in np.array_split(np.arange(TRAIN.shape[0]), ways)
                for part in [TRAIN[part]]
            ]
            merged = reduce(lambda a, b: a.merge(b), replicas)
            averaged[ways] = merged.derive().score("perplexity", TEST)  # the last epoch's
            state = merged.finish_round(start if epoch else None)
        results[ways] = state.derive().score("perplexity", TEST)
    print(
        f"NTM-REPORT held-out perplexity by replicas merged: {results}; averaged only: {averaged}"
    )
    assert results[2] <= 1.25 * single and results[4] <= 1.8 * single, results


def test_topic_match_undoes_a_permutation(trained):
    order = np.array([3, 0, 4, 1, 2])
    shuffled = {n: (v[order] if n in ("topics", "mu.weight") else v) for n, v in trained.params.items()}  # fmt: skip
    found = topic_match(trained.params, shuffled)
    np.testing.assert_array_equal(shuffled["topics"][found], trained.params["topics"])


def test_block_and_row_updates_take_the_same_steps():
    docs, config = TRAIN[:150], _CONFIG  # a sample that takes every held-out document
    by_block = NTMState(config).update(docs)
    by_row = NTMState(config)
    for i in range(0, 150, 7):
        by_row.update(docs[i : i + 7])
    assert by_block.steps == by_row.steps == (150 - by_block.sample.n_rows) // 64
    for name, value in by_block.params.items():
        np.testing.assert_allclose(value, by_row.params[name], rtol=1e-5, atol=1e-6)


def test_checkpoint_round_trip_and_resume_continues(trained):
    blob = trained.to_bytes()
    again = load_state(blob)
    assert again.to_bytes() == blob and again.steps == trained.steps
    model = trained.derive()
    assert load_model(model.to_bytes()).to_bytes() == model.to_bytes()
    # Resume: the reloaded state trains on from where it was, exactly as the original.
    later = _corpus(300, 7)
    direct = trained.followed_by(trained.continued().update(later))
    resumed = again.followed_by(again.continued().update(later))
    assert resumed.n_seen == trained.n_seen + 300 and resumed.steps > trained.steps
    assert resumed.to_bytes() == direct.to_bytes()


def test_early_stopping_stops_training():
    config = NTMConfig(
        **{**_CONFIG.__dict__, "epochs": 20, "tolerance": 0.9, "num_patience_epochs": 1}
    )
    state = _fit(config, TRAIN[:500], 3)
    assert state.stopped and state.bad_epochs == 1
    steps = state.steps
    state = state.continued().update(TRAIN[:500])
    assert state.steps == steps and state.n_seen == 2000  # counted, not trained on


def test_bad_input_and_config_errors(trained):
    negative = TEST[:5].toarray()
    negative[2, 7] = -3
    with pytest.raises(BadInputError, match=r"word counts >= 0; row 2, column 7 is -3.0"):
        NTMState(_CONFIG).update(negative)
    with pytest.raises(BadInputError, match=rf"X has 7 features, but NTMState expects {V}"):
        trained.update(np.ones((2, 7)))
    with pytest.raises(ValueError, match=r"'num_topics' parameter of NTMConfig must be an int in \[2, 1000\]"):  # fmt: skip
        NTMConfig(feature_dim=10, num_topics=1)
    with pytest.raises(
        ValueError, match="'encoder_layers' parameter of NTMConfig must be 'auto' or"
    ):
        NTMConfig(feature_dim=10, num_topics=3, encoder_layers="10,x")
    with pytest.raises(ValueError, match="'optimizer' parameter of NTMConfig must be one of"):
        NTMConfig(feature_dim=10, num_topics=3, optimizer="lbfgs")
    with pytest.raises(NotEnoughDataError):
        NTMState(_CONFIG).derive()
    with pytest.raises(DeviceUnavailableError, match="sees no GPU"):
        NTMState(NTMConfig(feature_dim=10, num_topics=3, device="gpu:3")).update(np.ones((2, 10)))
    assert NTMConfig(feature_dim=10, num_topics=4).hidden_layers == (12, 8)


@pytest.mark.parametrize("optimizer", ["adadelta", "sgd", "adagrad", "rmsprop"])
def test_every_optimizer_learns_and_round_trips(optimizer):
    config = NTMConfig(
        feature_dim=V, num_topics=K, optimizer=optimizer, learning_rate=0.05, batch_norm=True,
        dropout=0.2, sub_sample=0.8, epochs=2, mini_batch_size=64,
    )  # fmt: skip
    untrained = _fit(config, TRAIN[:64], 1)
    state = _fit(config, TRAIN[:1000], 2)
    assert load_state(state.to_bytes()).to_bytes() == state.to_bytes()
    assert state.derive().score("perplexity", TEST) < untrained.derive().score("perplexity", TEST)


def test_update_accepts_a_labelled_block_and_ignores_labels():
    docs = TRAIN[:70]
    a = NTMState(_CONFIG).update(Block(docs, np.ones(70)))
    b = NTMState(_CONFIG).update(docs)
    assert a.to_bytes() == b.to_bytes()


def test_vocabulary_travels_with_the_state_and_the_model(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(f"w{i} 0\n" for i in range(V)))  # vocab.new's lines
    config = NTMConfig(**{**_CONFIG.__dict__, "vocabulary": str(path)})
    state = NTMState(config).update(TRAIN[:200])
    path.unlink()  # read once: the state and its checkpoint carry the words
    again = load_state(state.to_bytes())
    model = load_model(again.derive().to_bytes())
    ids = model.top_words(3)
    assert model.top_words_text(3) == [[f"w{i}" for i in row] for row in ids]
    bad = tmp_path / "short.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(ValueError, match=rf"has 2 words; NTMConfig has feature_dim={V}"):
        NTMState(NTMConfig(**{**_CONFIG.__dict__, "vocabulary": str(bad)})).update(TRAIN[:5])


def test_vocabulary_from_a_vocabulary_checkpoint(tmp_path):
    """The raw-text stage's vocabulary (a checkpoint of a vocabulary model)."""
    from beam_ml import write_checkpoint
    from beam_ml.algorithms.vocabulary import vocabulary_of

    words = [f"word{i}" for i in range(V)]
    write_checkpoint(str(tmp_path / "vocab"), vocabulary_of(words))
    config = NTMConfig(**{**_CONFIG.__dict__, "vocabulary": str(tmp_path / "vocab")})
    model = load_model(NTMState(config).update(TRAIN[:100]).derive().to_bytes())
    assert model.vocabulary == words


@pytest.mark.beam
def test_epochs_in_a_beam_pipeline():
    """Train with epochs > 1 (TrainEpochs: replicas from the previous epoch, merged and
    finished) learns the planted topics as in memory."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from beam_ml import Train
    from tests.conftest import direct_options

    config = NTMConfig(**{**_CONFIG.__dict__, "epochs": 4})
    docs = TRAIN[:1000]
    in_memory = _fit(config, docs, 4).derive().score("perplexity", TEST)
    with beam.Pipeline(options=direct_options()) as p:
        state = p | beam.Create([Block(docs[i : i + 250]) for i in range(0, 1000, 250)])
        state = state | Train(config)

        def summary(s):
            perplexity = s.derive().score("perplexity", TEST)
            return s.n_seen, s.epochs_done, bool(perplexity <= 1.1 * in_memory)

        assert_that(state | beam.Map(summary), equal_to([(4000, 3, True)]))


def test_cli_predicts_topic_weights_in_sagemaker_shape(tmp_path):
    """train, derive and predict ntm from the command line: ``--output_format sagemaker``
    answers SageMaker's ``{"topic_weights": [...]}`` per document, in input order, equal
    to the model's own topic_weights; csv gives the same numbers under a header."""
    import json

    from beam_ml.cli.main import main
    from beam_ml.io.checkpoints import read_checkpoint

    docs = TRAIN[:300]
    lines = [
        "1 " + " ".join(f"{j + 1}:{int(c)}" for j, c in zip(row.indices, row.data, strict=True))
        for row in docs
    ]
    (tmp_path / "docs.libsvm").write_text("\n".join(lines) + "\n")

    def cli(*args):
        assert main(["--quiet", *map(str, args)]) == 0

    source = ("--input", tmp_path / "docs.libsvm", "--format", "libsvm")
    cli("train", "ntm", *source, "--feature_dim", V, "--output", tmp_path / "state",
        "--num_topics", K, "--epochs", 1, "--mini_batch_size", 64)  # fmt: skip
    cli("derive", tmp_path / "state", "--output", tmp_path / "model")
    for output_format in ("sagemaker", "csv"):
        cli("predict", tmp_path / "model", *source, "--output", tmp_path / output_format,
            "--output_format", output_format)  # fmt: skip
    model, _ = read_checkpoint(str(tmp_path / "model"))
    expected = model.topic_weights(Block(docs))
    answers = [json.loads(line) for line in (tmp_path / "sagemaker").read_text().splitlines()]
    assert [set(a) for a in answers] == [{"topic_weights"}] * len(lines)
    np.testing.assert_allclose([a["topic_weights"] for a in answers], expected, rtol=1e-6)
    csv = (tmp_path / "csv").read_text().splitlines()
    assert csv[0] == ",".join(f"topic_weight_{k}" for k in range(K))
    np.testing.assert_allclose(np.loadtxt(csv[1:], delimiter=","), expected, rtol=1e-6)


@pytest.mark.beam
@pytest.mark.streaming
def test_a_topic_appearing_mid_stream_shows_in_a_later_snapshot(tmp_path):
    """Continuous training (TrainStreaming, snapshots every 1,000 documents) on a drifting
    corpus: 4,000 documents of the 5 planted topics, then 4,000 of those and a sixth on
    20 words never seen before. The snapshot at the drift has no topic on the new words;
    the last one has a topic whose top-10 words are (nearly) all new ones."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.testing.test_stream import TestStream

    from beam_ml.transforms.stream import TrainStreaming
    from tests.conftest import direct_options

    rng = np.random.default_rng(7)
    wide = V + PER  # the new topic's words are the last PER columns
    planted = np.kron(np.eye(K + 1), np.full((1, PER), 1.0 / PER))

    def documents(n: int, topics: int) -> sp.csr_matrix:
        theta = rng.dirichlet(np.full(topics, 0.1), n)
        lengths = rng.integers(30, 60, n)
        mixtures = theta @ planted[:topics]
        rows = [rng.multinomial(m, p) for m, p in zip(lengths, mixtures, strict=True)]
        return sp.csr_matrix(np.stack(rows).astype(np.float32))

    docs = sp.vstack([documents(4000, K), documents(4000, K + 1)]).tocsr()
    stream = TestStream()
    for start in range(0, docs.shape[0], 500):
        stream = stream.add_elements([Block(docs[start : start + 500])])
    config = NTMConfig(**{**_CONFIG.__dict__, "feature_dim": wide, "num_topics": K + 1,
                          "batch_norm": True, "validation_holdout": 0.0})  # fmt: skip
    options = direct_options()
    options.view_as(StandardOptions).streaming = True
    found = tmp_path / "snapshots"

    def record(state):  # (documents seen, best share of new words in a topic's top 10)
        share = (state.derive().top_words(10) >= V).mean(axis=1).max()
        with open(found, "a") as handle:
            handle.write(f"{state.n_seen} {share}\n")

    with beam.Pipeline(options=options) as p:
        snapshots = (
            p
            | stream.advance_watermark_to_infinity()
            | TrainStreaming(config, snapshot_every_seconds=None, snapshot_every_rows=1000)
        )
        _ = snapshots | beam.Map(record)
    shares = dict(np.loadtxt(found, ndmin=2))
    print("NTM-REPORT drift: new-word share of the best topic by documents seen", shares)
    assert sorted(shares) == list(range(1000, 8001, 1000))
    assert shares[4000] == 0.0 and shares[8000] >= 0.9, shares


def test_annealed_decoder_batch_norm():
    """``batch_norm_anneal``: the decoder's batch-normalized share falls from 1 (first
    quarter of the epochs) to 0 (from three quarters); in between the word distribution
    is the mixture of the batch-normalized and the plain one; the planted topics are
    found and the state round-trips."""
    from beam_ml.nn.ntm import _bn, decode

    config = NTMConfig(
        feature_dim=V, num_topics=K, optimizer="adam", learning_rate=0.01, batch_norm=True,
        batch_norm_anneal=True, epochs=8, mini_batch_size=64, validation_holdout=0.0,
    )  # fmt: skip
    assert [config.decoder_bn_share(e) for e in range(8)] == [1, 1, 1, 0.75, 0.5, 0.25, 0, 0]
    state = _fit(config, TRAIN, 8)
    assert state.params["dec.mix"][0] == 0.0
    model = state.derive()
    top = model.top_words(10) // PER
    assert sum(np.any((top == k).mean(axis=1) >= 0.9) for k in range(K)) >= 4, model.top_words(10)
    assert load_state(state.to_bytes()).to_bytes() == state.to_bytes()
    assert load_model(model.to_bytes()).score("perplexity", TEST) == model.score("perplexity", TEST)

    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    params["dec.mix"] = np.array([0.3])
    theta = np.random.default_rng(0).dirichlet(np.ones(K), 7)

    def dist(logits):
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    logits = theta @ params["topics"]
    expected = 0.3 * dist(_bn(params, "dec_bn", logits)) + 0.7 * dist(logits + params["dec.bias"])
    np.testing.assert_allclose(np.exp(decode(params, theta)), expected, rtol=1e-9)


def _scholar_npmi(topics: list[str], ref_vocab: list[str], ref_counts: sp.csr_matrix) -> float:
    """Scholar's ``compute_npmi_at_n`` (Card et al. 2018), rewritten independently:
    document co-occurrence over ``ref_counts``, base-10 logs, a pair that never
    co-occurs scored 0; the mean over pairs, then over topics."""
    index = {w: i for i, w in enumerate(ref_vocab)}
    n_docs = ref_counts.shape[0]
    means = []
    for topic in topics:
        words = topic.split()
        values = []
        for i, word1 in enumerate(words):
            for word2 in words[i + 1 :]:
                col1 = np.asarray(ref_counts[:, index[word1]].todense() > 0, dtype=int)
                col2 = np.asarray(ref_counts[:, index[word2]].todense() > 0, dtype=int)
                c1, c2, c12 = col1.sum(), col2.sum(), np.sum(col1 * col2)
                if c12 == 0:
                    values.append(0.0)
                else:
                    values.append(
                        (np.log10(n_docs) + np.log10(c12) - np.log10(c1) - np.log10(c2))
                        / (np.log10(n_docs) - np.log10(c12))
                    )
        means.append(np.mean(values))
    return float(np.mean(means))


def test_npmi_follows_scholars_reference_with_unseen_pairs_at_zero():
    """The default NPMI is Scholar's (a pair never co-occurring scores 0), the -1
    variant is reported beside it; known counts: 4 documents, words a b c d."""
    vocab = ["a", "b", "c", "d", "e"]
    docs = sp.csr_matrix(
        np.array(
            [[2, 1, 0, 0, 0],  # a b
             [1, 3, 1, 0, 1],  # a b c e
             [1, 0, 2, 0, 1],  # a c e
             [0, 0, 0, 1, 0]],  # d
            dtype=np.float32,
        )
    )  # fmt: skip
    top = np.array([[0, 1, 2, 3], [4, 3, 2, 1]])
    # topic "a b c d": (a,b) and (a,c) log(4*2/(3*2))/log(4/2) = log2(4/3); (b,c)
    # log(4*1/(2*2))/log 4 = 0; d never co-occurs with a, b or c: 0 or -1.
    ab = np.log2(4 / 3)
    # topic "e d c b": (e,c) log(4*2/(2*2))/log(4/2) = 1; (e,b) log(4/(2*2))/log 4 = 0,
    # (c,b) 0; d unseen with e, c and b.
    expected_zero = np.array([2 * ab / 6, 1 / 6])
    expected_minus_1 = np.array([(2 * ab - 3) / 6, (1 - 3) / 6])
    np.testing.assert_allclose(npmi_coherence(top, docs), expected_zero, rtol=1e-12)
    np.testing.assert_allclose(npmi_coherence(top, docs, unseen=-1.0), expected_minus_1, rtol=1e-12)
    topics = [" ".join(vocab[i] for i in row) for row in top]
    assert npmi_coherence(top, docs).mean() == pytest.approx(_scholar_npmi(topics, vocab, docs))
    # The model reports both (evaluate, derive's held-out metrics): a model whose
    # (centred) topics rank the words as ``top``.
    params = initial_parameters(parameter_shapes(5, (3,), 2, batch_norm=False), seed=0)
    params["topics"] = np.array([[4.0, 3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    model = NTMModel(params, (3,), "relu", top_n=4)
    np.testing.assert_array_equal(model.top_words(4), top)
    metrics = model.metrics_from_sums(model.metric_sums(docs))
    assert metrics["npmi"] == pytest.approx(_scholar_npmi(topics, vocab, docs), rel=1e-12)
    assert metrics["npmi_unseen_minus_1"] == pytest.approx(expected_minus_1.mean(), rel=1e-12)
    assert model.score("npmi_unseen_minus_1", docs) < model.score("npmi", docs)


def _reordered(arrays: dict, topics: np.ndarray, units: list[np.ndarray]) -> dict:
    """``arrays`` (parameters or one optimizer slot, by name) of the same network with
    its topics and each encoder layer's units in other orders, written out array by
    array from the layout of nn/ntm.py (two encoder layers)."""
    out = dict(arrays)

    def put(name: str, value) -> None:
        if name in arrays:
            out[name] = value(arrays[name])

    put("enc0.weight", lambda w: w[units[0]])
    put("enc0.bias", lambda b: b[units[0]])
    put("enc1.weight", lambda w: w[units[1]][:, units[0]])
    put("enc1.bias", lambda b: b[units[1]])
    put("topics", lambda t: t[topics])
    for head in ("mu", "logv"):
        put(f"{head}.weight", lambda w: w[topics][:, units[1]])
        put(f"{head}.bias", lambda b: b[topics])
        for stat in ("beta", "mean", "var"):
            put(f"{head}_bn.{stat}", lambda s: s[topics])
    return out


@pytest.mark.parametrize("batch_norm", [False, True])
def test_a_replica_merged_with_its_reordered_twin_is_unchanged(trained, batch_norm, seed):
    """The network is the same function under any order of its topics and of each
    encoder layer's units: merging a replica with such a reordered copy of itself must
    give the replica back, parameters and optimizer state (the topics alone matched
    before, the hidden units averaged as they stood)."""
    state = trained
    if batch_norm:  # batch statistics of the posterior's outputs move with the topics
        state = _fit(dataclasses.replace(_CONFIG, batch_norm=True, dropout=0.2), TRAIN[:640], 2)
    assert len(state.config.hidden_layers) == 2
    rng = np.random.default_rng(seed)
    topics = rng.permutation(K)
    units = [rng.permutation(n) for n in state.config.hidden_layers]
    twin = state._copy()
    twin.pending = NTMState(state.config).pending  # nothing left to train in the merge
    twin.params = _reordered(state.params, topics, units)
    slots = [_reordered({n: v[j] for n, v in state.slots.items()}, topics, units) for j in range(2)]
    twin.slots = {name: [slot[name] for slot in slots] for name in state.slots}
    # The twin is the same model, its topics reordered.
    np.testing.assert_allclose(
        twin._model(twin).topic_weights(TEST[:50]),
        state._model(state).topic_weights(TEST[:50])[:, topics],
        rtol=1e-6, atol=1e-9,
    )  # fmt: skip
    merged = state.merge(twin)
    for name, value in state.params.items():
        np.testing.assert_array_equal(merged.params[name], value, err_msg=name)
        for mine, theirs in zip(merged.slots.get(name, []), state.slots.get(name, []), strict=True):
            np.testing.assert_array_equal(mine, theirs, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1])
def test_one_epochs_batch_norm_statistics_are_the_final_networks(seed):
    # Inference normalizes with the moving statistics: after one short pass (20 steps) they
    # must describe the network as it ends, not its untrained start (an average over all
    # steps left the means 0.3-0.6 sd off, and one epoch of 20 Newsgroups scored 6,591).
    config = NTMConfig(feature_dim=V, num_topics=K, epochs=1, seed=seed, validation_holdout=0.0)
    params = _fit(config, TRAIN, 1).derive().params
    h = encoder_input(params, TRAIN)
    for i in range(sum(name.startswith("enc") and name.endswith(".bias") for name in params)):
        h = np.maximum(np.asarray(h @ params[f"enc{i}.weight"].T) + params[f"enc{i}.bias"], 0.0)
    for name in ("mu", "logv"):
        raw = h @ params[f"{name}.weight"].T + params[f"{name}.bias"]  # before the batch norm
        offset = np.abs(raw.mean(0) - params[f"{name}_bn.mean"]) / raw.std(0)
        assert np.median(offset) < 0.2, (name, offset)
        assert 0.6 < np.median(raw.var(0) / params[f"{name}_bn.var"]) < 1.5, name


def test_learning_rate_decay_follows_the_epoch_count():
    """``learning_rate_decay`` from ``learning_rate_decay_start``: the rate of pass ``e``
    is ``learning_rate * decay ** max(0, e - start)``; a state trains its epoch at that
    rate (the same steps as a constant-rate config set to it), after a merge of replicas
    and a checkpoint round trip too (the schedule follows the epoch count the state
    keeps); before the start, training is bit-identical to a constant rate."""
    config = dataclasses.replace(
        _CONFIG, epochs=6, learning_rate_decay=0.5, learning_rate_decay_start=1, shuffle_buffer=0
    )  # no shuffle window: an update trains at once
    assert [config.learning_rate_at(e) for e in range(4)] == [0.01, 0.01, 0.005, 0.0025]
    assert _CONFIG.learning_rate_at(9) == _CONFIG.learning_rate
    docs = TRAIN[:640]
    state = _fit(config, docs, 2)
    constant = _fit(dataclasses.replace(config, epochs=6, learning_rate_decay=1.0), docs, 2)
    assert state.steps == constant.steps
    for name, value in state.params.items():
        np.testing.assert_array_equal(value, constant.params[name], err_msg=name)

    start = load_state(state.continued().to_bytes())  # epoch 2: the rate 0.005
    assert start.epoch == 2 and start.config == config
    merged = reduce(
        lambda a, b: a.merge(b),
        [start._copy().update(part) for part in (docs[:320], docs[320:])],
    )
    follow = merged.continued()  # epoch 3: the rate 0.0025

    def at_rate(rate):
        constant = dataclasses.replace(config, learning_rate=rate, learning_rate_decay=1.0)
        return follow._copy(constant).update(docs)

    reference, wrong = at_rate(0.0025), at_rate(0.005)
    follow.update(docs)
    assert follow.steps == reference.steps > merged.steps
    for name, value in follow.params.items():
        np.testing.assert_array_equal(value, reference.params[name], err_msg=name)
    assert not np.array_equal(wrong.params["topics"], reference.params["topics"])


def test_several_noise_samples_average_the_reconstruction_loss():
    """``noise_samples``: a step's loss is the KL term plus the reconstruction loss
    averaged over that many posterior draws: the trainer's loss before its first step
    equals numpy's ELBO terms (:func:`elbo_terms`) at the same draws; one draw is the
    default's training exactly."""
    from beam_ml.nn.ntm import elbo_terms

    config = dataclasses.replace(_CONFIG, noise_samples=3, validation_holdout=0.0)
    state = NTMState(config)
    state._allocate()
    params = {name: value.copy() for name, value in state.params.items()}
    batch = TRAIN[:64]
    losses = state._trainer_for_device().train(state.params, state.slots, 0, [batch])
    rng = np.random.default_rng([config.seed, 1])  # step 1's draws: the first, then the rest
    noise = np.concatenate([rng.standard_normal((64, K), dtype=np.float32),
                            rng.standard_normal((128, K), dtype=np.float32)])  # fmt: skip
    recon, kl = elbo_terms(params, batch, 2, "tanh", noise.reshape(3, 64, K).astype(np.float64))
    np.testing.assert_allclose(losses[0, 0], np.sum(kl - recon), rtol=1e-5)
    single = elbo_terms(params, batch, 2, "tanh", noise[None, :64].astype(np.float64))[0]
    assert not np.isclose(np.sum(kl - single), losses[0, 0], rtol=1e-5)  # not one draw's

    one = _fit(dataclasses.replace(_CONFIG, noise_samples=1), TRAIN[:320], 1)
    default = _fit(_CONFIG, TRAIN[:320], 1)
    assert one.to_bytes() == default.to_bytes()


def test_the_encoder_input_is_capped_alike_in_training_and_inference():
    # A row's log counts are scaled down to norm `encoder_input_norm` when longer: the
    # trainer's loss before its first step equals numpy's ELBO terms at the same draws
    # (so MXNet and numpy read the same input), and the cap changes that loss.
    from beam_ml.nn.ntm import elbo_terms

    batch = TRAIN[:64]
    losses = {}
    for cap in (3.0, None):
        config = dataclasses.replace(_CONFIG, encoder_input_norm=cap, validation_holdout=0.0)
        state = NTMState(config)
        state._allocate()
        params = {name: value.copy() for name, value in state.params.items()}
        losses[cap] = state._trainer_for_device().train(state.params, state.slots, 0, [batch])[0, 0]
        noise = np.random.default_rng([config.seed, 1]).standard_normal((1, 64, K), dtype=np.float32)
        recon, kl = elbo_terms(params, batch, 2, "tanh", noise.astype(np.float64))
        np.testing.assert_allclose(losses[cap], np.sum(kl - recon), rtol=1e-5)
    assert not np.isclose(losses[3.0], losses[None], rtol=1e-3)
    h, raw = encoder_input(params | {"input.norm": np.float32([3.0])}, batch), batch.log1p()
    norms = np.sqrt(np.asarray(raw.multiply(raw).sum(axis=1)).ravel())
    capped = np.sqrt(np.asarray(h.multiply(h).sum(axis=1)).ravel())
    assert (norms > 3.0).mean() > 0.5  # most rows are cut to the cap, the others stay
    np.testing.assert_allclose(capped, np.minimum(norms, 3.0), rtol=1e-6)


def test_a_state_written_before_the_input_cap_keeps_training_without_it():
    old = _fit(dataclasses.replace(_CONFIG, encoder_input_norm=None), TRAIN[:320], 1)
    meta, arrays = old._payload()
    assert not any(name.endswith("input.norm") for name in arrays)
    loaded = NTMState._from_payload(_CONFIG, meta, arrays)  # today's config: a cap of 4
    assert loaded.config.encoder_input_norm is None and "input.norm" not in loaded.params
    assert loaded.continued().update(TRAIN[320:640]).n_seen > 0
    capped = _fit(_CONFIG, TRAIN[:320], 1)
    assert capped.params["input.norm"][0] == 4.0
    assert capped._model(capped).to_bytes() != old._model(old).to_bytes()
