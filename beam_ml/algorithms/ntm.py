"""Neural Topic Model (SageMaker's NTM): a variational autoencoder over bags of words.

Each row of a block is one document's word counts (``feature_dim`` columns, CSR or
dense; labels, if any, are ignored: LIBSVM-like ``1 id:count ...`` files read as they
are). The network (:mod:`beam_ml.nn.ntm`) encodes a document into a Gaussian over
``num_topics`` logits, draws a topic mixture through a softmax and decodes it into word
probabilities whose weights are the topics; it is trained by mini-batch steps on MXNet
Gluon, device by configuration, on the gradient skeleton (:mod:`beam_ml.nn.skeleton`).

The state (DESIGN.md §4) holds the parameters and their optimizer state, the step count,
the rows not yet in a full mini-batch, progressive validation sums (each mini-batch's
loss before its step: an honest running estimate of the per-word perplexity), and the
*coherence sample*: a bounded, uniform sample of documents held out from training
(chosen by a hash of their content, so the same documents in every block, worker and
epoch; ``validation_holdout``, ``validation_sample_size``). It is the validation channel
that early stopping watches (``tolerance``, ``num_patience_epochs``) and the held-out
evidence a derived model reports its perplexity, NPMI coherence and topic uniqueness on:
the document frequencies and co-occurrence counts of whichever top words the topics end
up with, which a fixed set of tracked words could not give (the top words are known only
when a model is derived). Its size is set by the config, never by the rows seen.

* ``update(block)`` cuts the documents into mini-batches of exactly ``mini_batch_size``
  rows whatever the block boundaries (the same steps for one block or row by row).
* ``merge`` averages replicas that share their seeded initialization, weighted by the
  documents each trained on, after matching ``other``'s topics to this one's: the model
  is invariant to permuting the topics, so replicas may learn a topic under different
  indices. The match is the permutation maximizing the summed cosine similarity of the
  topics' word weights (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``),
  applied to every topic-indexed array and its optimizer state; the encoder's hidden
  units, as free to trade places, are matched too, by their weights (``replica_match``).
  Approximate, as every SGD merge: tests/algorithms/test_ntm.py measures what 2- and
  4-way merges cost, ``benchmarks/bench_ntm.py --merge-ways`` on 20 Newsgroups.
* ``derive`` returns an :class:`NTMModel` (numpy only): ``topic_weights`` per document
  (SageMaker's inference output), the topic-word matrix, top words, and metrics.

Notes
-----
Memory: the parameters (encoder ``V*h1 + h1*h2 + 2*h2*K``, topics ``K*V``) and as many
again per optimizer slot (AdaDelta and Adam 2, AdaGrad and RMSProp 1, SGD 0), fewer than
``shuffle_buffer`` (or ``mini_batch_size``) pending documents and at most
``validation_sample_size`` sampled ones. 20 Newsgroups (V = 1,995, K = 50, auto layers)
with AdaDelta: 0.4 M parameters, 5 MB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from beam_ml.core import serial
from beam_ml.core.block import Block, MatrixSpec, origin_note
from beam_ml.core.constraints import (
    Constraint,
    Constraints,
    Described,
    Interval,
    Options,
    check_value,
    validate_parameters,
)
from beam_ml.core.errors import BadInputError, IncompatibleStateError, NotEnoughDataError
from beam_ml.core.plan import ResumePlan
from beam_ml.core.state import Model, load_model, register
from beam_ml.nn import engine
from beam_ml.nn.engine import MergeSample, check_device, runtime_option
from beam_ml.nn.ntm import (
    ACTIVATIONS,
    NTM_OPTIMIZERS,
    elbo_terms,
    forward,
    initial_parameters,
    parameter_shapes,
    slot_count,
    softmax,
)
from beam_ml.nn.skeleton import AveragingState, PendingRows, lazy_network

__all__ = [
    "NTMConfig",
    "NTMState",
    "NTMModel",
    "coherence_counts",
    "npmi_from_counts",
    "npmi_coherence",
    "topic_uniqueness",
    "wetc",
    "top_word_ids",
]

# Arrays indexed by topic on their first axis: a permutation of the topics moves them all.
_TOPIC_AXIS = (
    "mu.weight", "mu.bias", "logv.weight", "logv.bias", "topics",
    "mu_bn.beta", "mu_bn.mean", "mu_bn.var", "logv_bn.beta", "logv_bn.mean", "logv_bn.var",
)  # fmt: skip
_SLOT_NAMES = {
    "adadelta": ("acc_g", "acc_delta"),
    "adam": ("mean", "var"),
    "adagrad": ("history",),
    "rmsprop": ("n",),
    "sgd": (),
}
_UNIT_SWEEPS = 10  # replica_match's sweeps over the encoder layers at most
_PERPLEXITY_DRAWS = 8  # posterior draws per document for the ELBO's expectation
_TOP_N = 10  # top words per topic for NPMI and TU (the usual choice, as ProdLDA's)
# finish_round's scales of a merged step: 0 the replicas' average, 1 their sum.
_STEP_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


class _LayerList(Constraint):
    """'auto' or comma-separated positive ints (SageMaker's encoder_layers)."""

    def accepts(self, value: Any) -> bool:
        if value == "auto":
            return True
        if not isinstance(value, str):
            return False
        parts = [p.strip() for p in value.split(",")]
        return all(p.isdigit() and int(p) > 0 for p in parts)

    def describe(self) -> str:
        return "'auto' or comma-separated positive ints such as '150,100'"


_POSITIVE = [Interval(float, 0.0, None, closed="neither")]
_NON_NEGATIVE = [Interval(float, 0.0, None)]


@dataclass(frozen=True)
class NTMConfig:
    """What must match for two NTM states to merge (SageMaker's names).

    SageMaker's defaults, except some that learn poorly here (set them to get
    SageMaker's): ``encoder_layers_activation='relu'`` (SageMaker: sigmoid),
    ``optimizer='adam'`` (adadelta), ``batch_norm=True`` (False) and ``dropout=0.2``
    (beam_ml's addition), with ``adam_beta1=0.99``: ProdLDA's choices (Srivastava & Sutton
    2017); ``learning_rate=0.004`` (0.01; ProdLDA 0.002), ``mini_batch_size=100`` (256)
    and ``num_patience_epochs=10`` (3), chosen on documents held out from 20 Newsgroups'
    training split. Measured (BENCHMARKS.md, NTM): on 20 Newsgroups SageMaker's defaults
    give topics of NPMI 0.057 (unseen pairs -1), ProdLDA's 0.09-0.15 at the same
    perplexity; twice the steps of 200 documents (100 a step, Adam 0.004) lower the
    held-out perplexity by 5% at 60 epochs; the held-out loss moves by 1-3% from epoch to
    epoch, so a patience of 3 stopped at 22-39 epochs, far from converged. Without batch
    norm a topic that appears mid-stream goes into the decoder's bias and never shows
    (tests/algorithms/test_ntm.py, the drifting corpus).

    Parameters
    ----------
    feature_dim : int
        Vocabulary size ``V`` (columns of the word-count rows).
    num_topics : int
        Number of topics ``K``, 2 to 1000.
    encoder_layers : str
        Hidden layer sizes of the encoder, comma-separated, or 'auto': ``3K,2K``.
    encoder_layers_activation : {'sigmoid', 'tanh', 'relu'}
    optimizer : {'adadelta', 'sgd', 'adam', 'adagrad', 'rmsprop'}
        MXNet's implementations; AdaDelta takes no learning rate (as MXNet's).
    learning_rate : float
    mini_batch_size : int
        Documents per step, independent of how the input is cut into blocks.
    epochs : int
        Passes over bounded input; a stream is one pass.
    tolerance : float
        Early stopping: an epoch improves when the validation loss falls by more than
        this fraction of the best so far.
    num_patience_epochs : int
        Early stopping: training stops after this many epochs without improvement.
    rescale_gradient : float
        Multiplies the gradient of the mean document loss.
    clip_gradient : float, optional
        Clip each gradient entry to [-clip_gradient, clip_gradient] (None: no clipping).
    weight_decay : float
        L2 weight decay of every parameter.
    batch_norm : bool
        Batch normalization of the posterior's mean and log variance and of the
        decoder's logits (ProdLDA's; more coherent topics).
    sub_sample : float
        Fraction of the documents each epoch trains on (chosen by a hash of the
        document and the epoch: the same documents on every worker).
    dropout : float
        Dropout of the last encoder layer and of the topic mixture while training
        (beam_ml's addition, ProdLDA's 0.2 lifts coherence).
    batch_norm_anneal : bool
        With ``batch_norm``: anneal the decoder's batch norm away over the epochs
        (Scholar's, Card et al. 2018): the decoder's word distribution is the batch-
        normalized one for the first quarter of ``epochs``, then a mixture moving
        linearly to plain logits plus a background bias by three quarters. The batch
        norm finds topics early; without it the topics of rare words it favours fit
        the corpus, not the per-word scale (beam_ml's addition; BENCHMARKS.md, NTM).
    adam_beta1 : float
        Adam's first-moment decay (beam_ml's addition; ProdLDA's 0.99 lifts coherence).
    shuffle_buffer : int, optional
        Documents train in a seeded random order within windows of this many (beam_ml's
        addition); default 10,000 when ``epochs > 1``, else 0 (arrival order).
    validation_holdout : float
        Fraction of the documents held out from training for the coherence sample (the
        validation channel; chosen by a hash of their content), at most 0.5; 0: none.
    validation_sample_size : int
        At most this many held-out documents are kept (a uniform sample of them); the
        others train as usual.
    learning_rate_decay : float
        The learning rate of pass ``epoch`` (0-based) is ``learning_rate *
        learning_rate_decay ** max(0, epoch - learning_rate_decay_start)`` (beam_ml's
        addition; 1: a constant rate). A function of the epoch count the state keeps,
        so replicas and resumes agree.
    learning_rate_decay_start : int
        The pass from which the rate decays (0: from the first).
    noise_samples : int
        Posterior draws per document in a training step, their reconstruction losses
        averaged: a lower-variance gradient of the ELBO (beam_ml's addition; 1: one draw).
        The decoder's work in a step (and the rows of its batch statistics) grows as
        many times.
    encoder_input_norm : float, optional
        The encoder reads ``log(1 + count)`` of each word, the row scaled down to this
        Euclidean norm when its norm is larger (beam_ml's addition; None: no cap). The
        longest documents otherwise lie far outside what the encoder has fitted and get
        extreme posteriors; 4 (most documents of 20 Newsgroups and KOS are longer) gave
        the lowest held-out perplexity on both (BENCHMARKS.md, NTM, session 30). A state
        written before this option keeps training without the cap.
    seed : int
        Seed of the initialization and of the random draws, shared by every replica.
    vocabulary : str, optional
        The words of the columns (beam_ml's addition): a beam_ml vocabulary model file
        (its ``words``) or a text file whose lines start with the words in column order
        (``vocab.new``'s ``word count`` lines too). Read once, kept in the state and the
        model, so ``top_words_text`` prints words.
    device : str
        'cpu', 'gpu' or 'gpu:N': a runtime option, kept with the config but never
        compared (states trained on different devices merge).
    """

    feature_dim: int
    num_topics: int
    encoder_layers: str = "auto"
    encoder_layers_activation: str = "relu"
    optimizer: str = "adam"
    learning_rate: float = 0.004
    mini_batch_size: int = 100
    epochs: int = 50
    tolerance: float = 0.001
    num_patience_epochs: int = 10
    rescale_gradient: float = 1.0
    clip_gradient: float | None = None
    weight_decay: float = 0.0
    batch_norm: bool = True
    sub_sample: float = 1.0
    dropout: float = 0.2
    adam_beta1: float = 0.99
    batch_norm_anneal: bool = False
    shuffle_buffer: int | None = None
    validation_holdout: float = 0.05
    validation_sample_size: int = 1000
    learning_rate_decay: float = 1.0
    learning_rate_decay_start: int = 0
    noise_samples: int = 1
    encoder_input_norm: float | None = 4.0
    seed: int = 0
    vocabulary: str | None = None
    device: str = runtime_option("cpu")

    PARAMETER_CONSTRAINTS: ClassVar[Constraints] = {
        "feature_dim": [Interval(int, 1, 2**31 - 1)],
        "num_topics": [Interval(int, 2, 1000)],
        "vocabulary": [str, None],
        "encoder_layers": [_LayerList()],
        "encoder_layers_activation": [Options(ACTIVATIONS)],
        "optimizer": [Options(NTM_OPTIMIZERS)],
        "learning_rate": _POSITIVE,
        "mini_batch_size": [Interval(int, 1, None)],
        "epochs": [Interval(int, 1, None)],
        "tolerance": _NON_NEGATIVE,
        "num_patience_epochs": [Interval(int, 1, None)],
        "rescale_gradient": _POSITIVE,
        "clip_gradient": [Described("a float > 0 or None", *_POSITIVE, None)],
        "weight_decay": _NON_NEGATIVE,
        "batch_norm": [bool],
        "batch_norm_anneal": [bool],
        "sub_sample": [Interval(float, 0.0, 1.0, closed="right")],
        "dropout": [Interval(float, 0.0, 1.0, closed="left")],
        "adam_beta1": [Interval(float, 0.0, 1.0, closed="left")],
        "shuffle_buffer": [Interval(int, 0, 10_000_000), None],
        "validation_holdout": [Interval(float, 0.0, 0.5)],
        "validation_sample_size": [Interval(int, 0, 1_000_000)],
        "learning_rate_decay": [Interval(float, 0.0, 1.0, closed="right")],
        "learning_rate_decay_start": [Interval(int, 0, None)],
        "noise_samples": [Interval(int, 1, 100)],
        "encoder_input_norm": [Interval(float, 0.0, None, closed="neither"), None],
        "seed": [Interval(int, 0, None)],
    }

    def __post_init__(self) -> None:
        validate_parameters(self)
        check_device(self.device, "device", "NTMConfig")

    @property
    def hidden_layers(self) -> tuple[int, ...]:
        """The encoder's layer sizes, 'auto' resolved to ``(3K, 2K)``."""
        if self.encoder_layers == "auto":
            return (3 * self.num_topics, 2 * self.num_topics)
        return tuple(int(p) for p in self.encoder_layers.split(","))

    @property
    def shapes(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        return parameter_shapes(
            self.feature_dim, self.hidden_layers, self.num_topics, self.batch_norm,
            self.batch_norm and self.batch_norm_anneal, self.encoder_input_norm is not None,
        )  # fmt: skip

    def decoder_bn_share(self, epoch: int) -> float:
        """The batch-normalized decoder's share in pass ``epoch`` (0-based) when
        annealed: 1 in the first quarter of ``epochs``, 0 from three quarters on."""
        return float(np.clip((0.75 - epoch / self.epochs) / 0.5, 0.0, 1.0))

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate of pass ``epoch`` (0-based): see ``learning_rate_decay``."""
        if self.learning_rate_decay == 1.0:
            return self.learning_rate
        decayed = max(0, epoch - self.learning_rate_decay_start)
        return self.learning_rate * self.learning_rate_decay**decayed

    @property
    def shuffle_rows(self) -> int:
        if self.shuffle_buffer is None:
            return 10_000 if self.epochs > 1 else 0
        return self.shuffle_buffer


# --- coherence and diversity: one definition for every model -------------------------------------
def top_word_ids(topics: np.ndarray, n: int = _TOP_N) -> np.ndarray:
    """The ``n`` highest-weighted words of each topic, best first: int64 (K, n)."""
    n = min(n, topics.shape[1])
    top = np.argpartition(-topics, n - 1, axis=1)[:, :n]
    order = np.argsort(-np.take_along_axis(topics, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).astype(np.int64)


def _pairs(top_words: np.ndarray) -> np.ndarray:
    """Each topic's word pairs (i < j by position): int64 (K, n(n-1)/2, 2)."""
    i, j = np.triu_indices(top_words.shape[1], k=1)
    return np.stack([top_words[:, i], top_words[:, j]], axis=-1)


def coherence_counts(top_words: np.ndarray, docs: Any) -> tuple[int, dict[int, int], dict]:
    """Documents, document frequency of every top word, and co-document frequency of
    every within-topic pair of top words, in ``docs`` (CSR or dense counts).

    Additive over any split of the documents (a model's metric sums add them up)."""
    x = sp.csr_matrix(docs)
    words = np.unique(top_words)
    present = (x[:, words] > 0).astype(np.float64)  # (docs, W): a document has the word
    df = np.asarray(present.sum(axis=0)).ravel()
    co = (present.T @ present).toarray()  # (W, W)
    pairs = np.unique(np.sort(_pairs(top_words).reshape(-1, 2), axis=1), axis=0)
    at = np.searchsorted(words, pairs)
    return (
        x.shape[0],
        {int(w): int(c) for w, c in zip(words, df, strict=True)},
        {(int(a), int(b)): int(co[i, j]) for (a, b), (i, j) in zip(pairs, at, strict=True)},
    )


def npmi_from_counts(
    top_words: np.ndarray, n_docs: float, df: dict[int, float], co: dict, unseen: float = 0.0
) -> np.ndarray:
    """NPMI of each topic (Bouma 2009; Lau et al. 2014): the mean over its top words'
    pairs of ``log(p(i,j) / p(i) p(j)) / -log p(i,j)``, with document probabilities
    (a word's share of the documents it occurs in). float64 (K,).

    The default is the literature's reference implementation, Scholar's
    ``compute_npmi.py`` (Card et al. 2018; MITRE's TMNT computes the same): documents
    as the window, and a pair that never co-occurs scores ``unseen`` = 0. ``unseen=-1``
    scores it -1 instead (the limit of NPMI as ``p(i,j) -> 0``, and what gensim's
    ``c_npmi`` with its epsilon comes near): on a small reference many pairs of rarer
    top words never co-occur, and -1 then dominates the figure. A pair in every
    document scores 1 (Scholar's formula divides 0 by 0 there)."""
    pairs = _pairs(top_words)  # (K, P, 2)
    low, high = np.minimum(pairs[..., 0], pairs[..., 1]), np.maximum(pairs[..., 0], pairs[..., 1])
    joint = np.vectorize(lambda a, b: co.get((int(a), int(b)), 0), otypes=[float])(low, high)
    p_i = np.vectorize(lambda w: df.get(int(w), 0), otypes=[float])(pairs[..., 0]) / n_docs
    p_j = np.vectorize(lambda w: df.get(int(w), 0), otypes=[float])(pairs[..., 1]) / n_docs
    p_ij = joint / n_docs
    with np.errstate(divide="ignore", invalid="ignore"):
        npmi = np.log(p_ij / (p_i * p_j)) / -np.log(p_ij)
    npmi = np.where(joint > 0, npmi, unseen)
    npmi = np.where(p_ij >= 1.0, 1.0, npmi)  # in every document: perfectly associated
    return npmi.mean(axis=1)


def npmi_coherence(top_words: np.ndarray, docs: Any, unseen: float = 0.0) -> np.ndarray:
    """NPMI of each topic's top words on the documents ``docs`` (held-out documents),
    float64 (K,); ``unseen`` as :func:`npmi_from_counts` (0: Scholar's convention, the
    default; -1: the limit). The benchmarks score every model with this one function."""
    n, df, co = coherence_counts(top_words, docs)
    return npmi_from_counts(top_words, n, df, co, unseen)


def topic_uniqueness(top_words: np.ndarray) -> float:
    """TU (Nan et al. 2019): the mean over topics and their top words of 1 / (the
    number of topics whose top words include the word); 1 when no word is shared."""
    _, inverse, counts = np.unique(top_words, return_inverse=True, return_counts=True)
    return float(np.mean(1.0 / counts[inverse.reshape(top_words.shape)]))


def wetc(top_words: np.ndarray, word_vectors: np.ndarray) -> np.ndarray:
    """Word-embedding topic coherence (Ding et al. 2018, pairwise): the mean cosine
    similarity of each topic's top words' vectors, float64 (K,). ``word_vectors`` is
    (V, dim), one row per vocabulary word."""
    v = np.asarray(word_vectors, dtype=np.float64)[top_words]  # (K, n, dim)
    v /= np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    sims = np.einsum("knd,kmd->knm", v, v)
    i, j = np.triu_indices(top_words.shape[1], k=1)
    return sims[:, i, j].mean(axis=1)


def read_vocabulary(path: str, feature_dim: int) -> list[str]:
    """The words of a vocabulary (see ``NTMConfig.vocabulary``), one per column: a
    vocabulary checkpoint directory (``beam-ml train/derive vocabulary``), a model file,
    or a text file of words."""
    if os.path.isdir(path):
        from beam_ml.algorithms.vocabulary import load_vocabulary

        return _checked_words(path, _word_list(load_vocabulary(path).words), feature_dim)
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith(serial.MAGIC):
        words = _word_list(getattr(load_model(data, source=path), "words", []))
    else:
        lines = data.decode("utf-8").splitlines()
        words = [line.split()[0] if line.split() else "" for line in lines]
    return _checked_words(path, words, feature_dim)


def _word_list(words: Any) -> list[str]:
    return [str(w) for w in (words.to_pylist() if hasattr(words, "to_pylist") else words)]


def _checked_words(path: str, words: list[str], feature_dim: int) -> list[str]:
    if len(words) != feature_dim:
        raise ValueError(
            f"The vocabulary {path!r} has {len(words)} words; NTMConfig has feature_dim="
            f"{feature_dim} (one word per column)."
        )
    return words


# --- inputs --------------------------------------------------------------------------------------
def _counts(block: Block, owner: str) -> sp.csr_matrix:
    """Word counts as float32 CSR; negative counts are an error naming the row."""
    features = block.features
    x = sp.csr_matrix(features, dtype=np.float32) if not sp.isspmatrix_csr(features) else features
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    if not x.has_canonical_format:
        x = x.copy() if x is features else x
        x.sum_duplicates()
    bad = np.flatnonzero(x.data < 0)
    if bad.size:
        row = int(np.searchsorted(x.indptr, bad[0], side="right") - 1)
        column, value = int(x.indices[bad[0]]), float(x.data[bad[0]])
        raise BadInputError(
            f"{owner} expects word counts >= 0; row {row}, column {column} is {value}."
            + origin_note(block)
        )
    return x


def _row_noise(features: sp.csr_matrix, draws: int, k: int) -> np.ndarray:
    """Standard normal draws (draws, rows, k) fixed by each document's content, so a
    document's ELBO estimate is the same in any block (metric sums add up)."""
    keys = engine.row_keys(features, np.zeros(features.shape[0]))
    salt = np.arange(1, 2 * draws * k + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        bits = engine._mix64(keys[:, None] + salt[None, :])  # (rows, 2 draws k)
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53  # in (0, 1)
    u1, u2 = u[:, : draws * k], u[:, draws * k :]
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)  # Box-Muller
    return z.reshape(-1, draws, k).transpose(1, 0, 2)


@register
class NTMState(AveragingState):
    """Neural Topic Model state: parameters, optimizer state, steps, pending documents,
    progressive validation and the coherence sample (see the module notes).

    Attributes
    ----------
    params : dict of str to ndarray, or None
        The network's arrays (:func:`beam_ml.nn.ntm.parameter_shapes`), float32; None
        until the first block.
    slots : dict of str to list of ndarray
        Optimizer state of each trained array.
    steps : int
    n_before, epoch, n_rows : int
        The start point (documents seen before, epoch index) and documents since.
    trained_rows : int
        Documents trained on since the start point (the merge weights).
    progressive : ndarray of shape (3,)
        Loss before each step summed, documents, words: first sight only.
    epoch_loss : ndarray of shape (3,)
        The same sums over the current epoch (early stopping without a sample).
    best_loss, bad_epochs, stopped
        Early stopping: the best validation loss per word, epochs since it, and
        whether training has stopped (further rows are counted, not trained on).
    """

    FAMILY = "ntm"
    BLOCK_KIND = Block
    SERIAL_VERSION = 1
    CONFIG = NTMConfig
    # New data trains on; a round's merged step is scaled on the sample (finish_round).
    PLAN = ResumePlan(resume="continue", finishes_rounds=True, epochs="epochs")
    START_POINTS_DIFFER = (
        "Cannot average ntm replicas that continue from different start points (epoch "
        "{mine.epoch} after {mine.n_before} documents vs epoch {theirs.epoch} after "
        "{theirs.n_before}); SGD replicas must share theirs."
    )

    def __init__(self, config: NTMConfig):
        super().__init__(config)
        self.params: dict[str, np.ndarray] | None = None
        self.slots: dict[str, list[np.ndarray]] = {}
        self.trained_rows = 0
        self.replicas = 0  # replicas that trained and were merged since the start point
        self.pending = PendingRows(
            config.mini_batch_size, config.feature_dim, config.shuffle_rows, config.seed,
            labelled=False,
        )  # fmt: skip
        self.sample = MergeSample(
            config.validation_sample_size, config.feature_dim, config.validation_holdout
        )
        self.epoch_loss = np.zeros(3)
        self.best_loss, self.bad_epochs, self.stopped = float("inf"), 0, False
        self.words: list[str] | None = None  # the vocabulary, read on first update
        self._trainer: Any = None

    @property
    def input_spec(self) -> MatrixSpec:
        return MatrixSpec(self.config.feature_dim)

    # --- training --------------------------------------------------------------------------
    @lazy_network("_trainer")
    def _trainer_for_device(self) -> Any:
        from beam_ml.nn.ntm import NTMTrainer  # MXNet loads here, on first training

        c = self.config
        return NTMTrainer(
            c.device,
            c.shapes,
            len(c.hidden_layers),
            c.encoder_layers_activation,
            c.optimizer,
            dict(
                learning_rate=c.learning_rate,
                wd=c.weight_decay,
                rescale_grad=c.rescale_gradient,
                clip_gradient=c.clip_gradient,
                **({"beta1": c.adam_beta1} if c.optimizer == "adam" else {}),
            ),
            c.dropout,
            c.seed,
            noise_samples=c.noise_samples,
        )

    def _allocate(self) -> None:
        c = self.config
        self.params = initial_parameters(c.shapes, c.seed)
        if c.encoder_input_norm is not None:
            self.params["input.norm"][0] = c.encoder_input_norm
        count = slot_count(c.optimizer)
        self.slots = {
            name: [np.zeros(shape, dtype=np.float32) for _ in range(count)]
            for name, (shape, trained) in c.shapes.items()
            if trained
        }

    def update(self, block: Any) -> NTMState:
        """Fold a block of documents in (word counts, ``feature_dim`` columns)."""
        features = _counts(self._check(block), self.owner)
        if features.shape[0] == 0:
            return self
        trainer = self._trainer_for_device()  # a missing GPU fails before anything changes
        if self.params is None:
            self._allocate()
        if self.words is None and self.config.vocabulary:
            self.words = read_vocabulary(self.config.vocabulary, self.config.feature_dim)
        rows = features.shape[0]
        features, _ = self.sample.set_aside(features, np.zeros(rows, dtype=np.float32))
        features = self._sub_sampled(features)
        self._train(trainer, self.pending.feed(features))
        self.n_rows += rows
        return self

    def _sub_sampled(self, features: sp.csr_matrix) -> sp.csr_matrix:
        """This epoch's share of the documents (``sub_sample``), by a hash of each
        document and the epoch (the holdout's hash uses label 0: independent)."""
        fraction = self.config.sub_sample
        if fraction >= 1.0 or features.shape[0] == 0:
            return features
        keys = engine.row_keys(features, np.full(features.shape[0], self.epoch + 1.0))
        return features[keys < np.uint64(min(fraction * 2.0**64, 2.0**64 - 1))]

    def _train(self, trainer: Any, batches: list[tuple[Any, Any]]) -> None:
        if not batches or self.stopped:
            return
        if "dec.mix" in self.params:
            self.params["dec.mix"][0] = self.config.decoder_bn_share(self.epoch)
        sums = trainer.train(
            self.params, self.slots, self.steps, [rows for rows, _ in batches],
            learning_rate=self.config.learning_rate_at(self.epoch),
        )  # fmt: skip
        self.steps += len(batches)
        self.replicas = max(self.replicas, 1)
        totals = sums.sum(axis=0)
        self.trained_rows += int(totals[1])
        self.epoch_loss += totals
        if self._first_sight:
            self.progressive += totals

    # --- merging and epochs ----------------------------------------------------------------
    def _pristine(self) -> bool:
        return self.params is None and self.n_seen == 0 and self.pending.n_rows == 0

    def _average(self, merged: NTMState, other: NTMState) -> None:
        """Document-weighted average of two replicas, ``other``'s topics matched to this
        one's first (approximate; see the module notes)."""
        if other.params is not None:
            if self.params is None or self.trained_rows == 0:
                merged.params, merged.slots = _copy_arrays(other.params, other.slots)
            elif other.trained_rows:
                order = replica_match(self.params, other.params, len(self.config.hidden_layers))
                merged.params, merged.slots = _averaged(
                    (self.params, self.slots, self.trained_rows),
                    _permuted(other.params, other.slots, *order),
                    other.trained_rows,
                )
        merged.words = self.words or other.words
        merged.replicas += other.replicas
        merged.trained_rows += other.trained_rows
        merged.sample = self.sample.merged(other.sample)
        merged.epoch_loss += other.epoch_loss
        if other.pending.n_rows:
            merged._train(merged._trainer_for_device(), merged.pending.feed(other.pending.features))

    def _copy(self, config: NTMConfig | None = None) -> NTMState:
        out = NTMState(config or self.config)
        if self.params is not None:
            out.params, out.slots = _copy_arrays(self.params, self.slots)
        out.steps, out.n_before, out.epoch = self.steps, self.n_before, self.epoch
        out.n_rows, out.trained_rows, out.replicas = self.n_rows, self.trained_rows, self.replicas
        out.pending, out.sample = self.pending.copy(), self.sample.copy()
        out.progressive, out.epoch_loss = self.progressive.copy(), self.epoch_loss.copy()
        out.best_loss, out.bad_epochs, out.stopped = self.best_loss, self.bad_epochs, self.stopped
        out.words = self.words
        return out

    def continued(self) -> NTMState:
        """The start of the next epoch (or of training on new data): the last partial
        mini-batch trained, rows counted as seen before, early stopping checked."""
        out = self._copy()
        batches = out.pending.flush()
        if batches and out.params is not None:
            out._train(out._trainer_for_device(), batches)
        out._next_pass()
        out.trained_rows, out.replicas = 0, 0
        if out._first_sight:  # new data: training goes on whatever the last run's patience
            out.best_loss, out.bad_epochs, out.stopped = float("inf"), 0, False
        elif out.params is not None and not out.stopped:
            out._early_stopping()
        out.epoch_loss = np.zeros(3)
        return out

    def finish_round(self, start: NTMState | None) -> NTMState:
        """Scale this merge's step from ``start`` between the replicas' average and sum.

        An average of ``r`` replicas moves by the mean of their steps: ``1/r`` of the
        progress one model taking all their steps makes early in training (measured in
        tests/algorithms/test_ntm.py). The merged step of the trained arrays is scaled
        by ``1 + t (r - 1)``, ``t`` in [0, 1] chosen on the coherence sample (held-out
        documents) by the lowest negative ELBO; without a sample, the average (t = 0).
        """
        if self.replicas < 2 or self.params is None or not self.sample.n_rows:
            return self
        if start is None:  # the seeded initialization every replica began at
            start = NTMState(self.config)
            start._allocate()
        if start.params is None:
            return self
        trained = [name for name, (_, grad) in self.config.shapes.items() if grad]
        best, chosen = float("inf"), None
        for t in _STEP_GRID:
            scale = np.float32(1.0 + t * (self.replicas - 1))
            params = dict(self.params)
            for name in trained:
                params[name] = start.params[name] + scale * (self.params[name] - start.params[name])
            candidate = self._copy()
            candidate.params = params
            sums = self._model(candidate).metric_sums(self.sample.features, coherence=False)
            if np.isfinite(sums["negative_elbo"]) and sums["negative_elbo"] < best:
                best, chosen = sums["negative_elbo"], candidate
        return chosen or self

    def _early_stopping(self) -> None:
        """SageMaker's rule on the validation loss per word (the coherence sample, or
        this epoch's training loss without one)."""
        if self.sample.n_rows:
            model = self._model(self)
            sums = model.metric_sums(self.sample.features, coherence=False)
            loss = sums["negative_elbo"] / max(sums["words"], 1.0)
        elif self.epoch_loss[2]:
            loss = self.epoch_loss[0] / self.epoch_loss[2]
        else:
            return
        if loss < self.best_loss * (1.0 - self.config.tolerance) or not np.isfinite(self.best_loss):
            self.best_loss, self.bad_epochs = float(loss), 0
        else:
            self.bad_epochs += 1
            self.stopped = self.bad_epochs >= self.config.num_patience_epochs

    # --- models ------------------------------------------------------------------------------
    def _model(self, learned: NTMState) -> NTMModel:
        c = self.config
        return NTMModel(
            {name: value.copy() for name, value in learned.params.items()},
            c.hidden_layers,
            c.encoder_layers_activation,
            vocabulary=self.words,
            n_seen=self.n_seen,
        )

    def derive(self, top_n: int = _TOP_N) -> NTMModel:
        """The topic model learned so far (pending documents learnt on a copy; the
        coherence sample stays held out), with its held-out perplexity, NPMI and TU on
        the coherence sample and its progressive perplexity.

        Parameters
        ----------
        top_n : int
            Top words per topic for NPMI and topic uniqueness (default 10).
        """
        top_n = check_value(top_n, "top_n", "NTMState.derive", [Interval(int, 2, None)])
        if self.n_seen == 0 or self.params is None:
            raise NotEnoughDataError("A topic model needs at least one document.")
        learned = self
        if self.pending.n_rows:
            learned = self._copy()
            learned.stopped = False
            learned._train(learned._trainer_for_device(), learned.pending.flush())
        model = self._model(learned)
        model.top_n = top_n
        loss, words = self.progressive[0], self.progressive[2]
        model.progressive_perplexity = float(np.exp(loss / words)) if words else float("nan")
        if self.sample.n_rows:
            model.heldout = model.metrics_from_sums(model.metric_sums(self.sample.features))
        return model

    # --- serialization -------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_trainer": None}  # MXNet handles stay in their process

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "steps": self.steps,
            "n_before": self.n_before,
            "epoch": self.epoch,
            "n_rows": self.n_rows,
            "trained_rows": self.trained_rows,
            "replicas": self.replicas,
            "best_loss": self.best_loss if np.isfinite(self.best_loss) else None,
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
        }
        arrays = {"pv": self.progressive, "epoch_loss": self.epoch_loss}
        arrays.update(self.pending.to_arrays("pending"))
        arrays.update(self.sample.to_arrays("sample"))
        if self.words is not None:
            arrays.update(_packed_words(self.words))
        if self.params is not None:
            names = _SLOT_NAMES[self.config.optimizer]
            for name, value in self.params.items():
                arrays[f"param.{name}"] = value
                for slot, array in zip(names, self.slots.get(name, []), strict=False):
                    arrays[f"{slot}.{name}"] = array
        return meta, arrays

    @classmethod
    def _from_payload(
        cls, config: NTMConfig, meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> NTMState:
        if "param.topics" in arrays and "param.input.norm" not in arrays:
            # written before the encoder's input had a cap: it keeps training without one
            config = replace(config, encoder_input_norm=None)
        state = cls(config)
        names = ("steps", "n_before", "epoch", "n_rows", "trained_rows", "replicas", "bad_epochs")
        for name in names:
            value = int(meta[name])
            if value < 0:  # a negative step count would divide by zero in Adam's bias terms
                raise IncompatibleStateError(f"NTM payload: {name} is {value}, expected >= 0.")
            setattr(state, name, value)
        best = meta["best_loss"]
        state.best_loss = float("inf") if best is None else float(best)
        state.stopped = bool(meta["stopped"])
        state.words = _unpacked_words(arrays, config.feature_dim)
        state.progressive = arrays["pv"].astype(np.float64)
        state.epoch_loss = arrays["epoch_loss"].astype(np.float64)
        if state.progressive.shape != (3,) or state.epoch_loss.shape != (3,):
            raise IncompatibleStateError("NTM payload: misshapen pv/epoch_loss.")
        state.pending = PendingRows.from_arrays(
            arrays, "pending", config.mini_batch_size, config.feature_dim,
            config.shuffle_rows, config.seed, labelled=False,
        )  # fmt: skip
        state.sample = MergeSample.from_arrays(
            arrays, "sample", config.validation_sample_size, config.feature_dim,
            config.validation_holdout,
        )  # fmt: skip
        if "param.topics" in arrays:
            names = _SLOT_NAMES[config.optimizer]
            state.params, state.slots = {}, {}
            for name, (shape, trained) in config.shapes.items():
                state.params[name] = _array(arrays, f"param.{name}", shape)
                if trained:
                    state.slots[name] = [_array(arrays, f"{s}.{name}", shape) for s in names]
        return state


_WORD_ARRAYS = {"word_bytes", "word_ends"}  # the vocabulary's (pack_words)


def _packed_words(words: list[str]) -> dict[str, np.ndarray]:
    from beam_ml.algorithms.vocabulary import pack_words  # the vocabulary's own format

    return pack_words(words)


def _unpacked_words(arrays: dict[str, np.ndarray], feature_dim: int) -> list[str] | None:
    if "word_ends" not in arrays:
        return None
    from beam_ml.algorithms.vocabulary import unpack_words

    words = _word_list(unpack_words(arrays))
    if len(words) != feature_dim:
        raise IncompatibleStateError(
            f"NTM payload: {len(words)} vocabulary words for {feature_dim} columns."
        )
    return words


def _array(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    value = arrays[key]
    if value.shape != shape:
        raise IncompatibleStateError(
            f"NTM payload array {key!r} has shape {value.shape}, expected {shape}."
        )
    return np.array(value, dtype=np.float32)


def _copy_arrays(params: dict, slots: dict) -> tuple[dict, dict]:
    return (
        {name: value.copy() for name, value in params.items()},
        {name: [s.copy() for s in values] for name, values in slots.items()},
    )


def topic_match(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> np.ndarray:
    """The permutation ``p`` that puts ``other``'s topic ``p[k]`` at index ``k``: the one
    maximizing the summed cosine similarity of matched topics' centred word weights
    (centred over the topics, see NTMModel.topics, and over the words)."""
    a = reference["topics"].astype(np.float64)
    b = other["topics"].astype(np.float64)
    a = a - a.mean(axis=0) - (a - a.mean(axis=0)).mean(axis=1, keepdims=True)
    b = b - b.mean(axis=0) - (b - b.mean(axis=0)).mean(axis=1, keepdims=True)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    _, columns = linear_sum_assignment(-(a @ b.T))
    return columns


def replica_match(
    reference: dict[str, np.ndarray], other: dict[str, np.ndarray], layers: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The permutations that line ``other`` up with ``reference`` before averaging:
    ``other``'s topic order (:func:`topic_match`) and the unit order of each of its
    ``layers`` encoder layers. The network computes the same function under any
    permutation of a hidden layer's units as of its topics, so replicas may differ by
    both, and averaging units that play different parts blurs the encoder. The units
    are matched by weight matching (Ainsworth et al. 2022, "Git Re-Basin"): a layer's
    order maximizes the summed inner products of matched units' incoming weights, bias
    and outgoing weights, the other layers' orders fixed; a first sweep on the incoming
    weights alone (exact for a permuted copy), then sweeps on all until none changes."""
    topics = topic_match(reference, other)
    units = [np.arange(other[f"enc{i}.bias"].shape[0]) for i in range(layers)]
    for sweep in range(_UNIT_SWEEPS):
        changed = False
        for i in range(layers):
            aligned, _ = _permuted(other, {}, topics, units)
            mine = _unit_weights(reference, i, layers, outgoing=sweep > 0)
            theirs = _unit_weights(aligned, i, layers, outgoing=sweep > 0)
            _, columns = linear_sum_assignment(-(mine @ theirs.T))
            if (columns != np.arange(len(columns))).any():
                units[i], changed = units[i][columns], True
        if sweep and not changed:
            break
    return topics, units


def _unit_weights(params: dict[str, np.ndarray], i: int, layers: int, outgoing: bool) -> np.ndarray:
    """Each unit of encoder layer ``i`` as one vector (a row): its incoming weights and
    bias and, with ``outgoing``, the next layer's weights on it."""
    parts = [params[f"enc{i}.weight"], params[f"enc{i}.bias"][:, None]]
    if outgoing:
        heads = [f"enc{i + 1}.weight"] if i + 1 < layers else ["mu.weight", "logv.weight"]
        parts += [params[name].T for name in heads]
    return np.hstack(parts).astype(np.float64)


def _permuted(
    params: dict, slots: dict, topics: np.ndarray, units: list[np.ndarray]
) -> tuple[dict, dict]:
    """Copies of ``params`` and ``slots`` with the topics in order ``topics`` and each
    encoder layer's units in ``units``' orders (a unit's incoming weights and bias are
    its layer's rows, its outgoing weights the next layer's columns)."""

    def move(name: str, value: np.ndarray) -> np.ndarray:
        if name in _TOPIC_AXIS:
            value = value[topics]
        layer, _, kind = name.partition(".")
        if layer.startswith("enc"):
            i = int(layer[3:])
            value = value[units[i]]
            if kind == "weight" and i:
                value = value[:, units[i - 1]]
        elif name in ("mu.weight", "logv.weight") and units:
            value = value[:, units[-1]]
        return value.copy()

    return (
        {name: move(name, value) for name, value in params.items()},
        {name: [move(name, s) for s in values] for name, values in slots.items()},
    )


def _averaged(mine: tuple[dict, dict, int], theirs: tuple[dict, dict], weight: int) -> tuple:
    params, slots, own_weight = mine
    w = np.float32(weight / (weight + own_weight))

    def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + (b - a) * w

    other_params, other_slots = theirs
    return (
        {name: mix(value, other_params[name]) for name, value in params.items()},
        {
            name: [mix(a, b) for a, b in zip(values, other_slots[name], strict=True)]
            for name, values in slots.items()
        },
    )


class NTMModel(Model):
    """A derived Neural Topic Model (numpy only).

    Attributes
    ----------
    params : dict of str to ndarray
        The network's arrays.
    hidden_layers : tuple of int
    activation : str
    vocabulary : list of str, optional
        The word of each column, when the state was given one.
    n_seen : int
    top_n : int
        Top words per topic for NPMI and TU.
    progressive_perplexity : float
        ``exp`` of the training loss per word, each document scored before its step
        (first sight only): an ELBO-based perplexity on unseen documents.
    heldout : dict
        Metrics on the state's coherence sample (documents held out from training):
        perplexity, npmi, npmi_unseen_minus_1, n_rows; empty without a sample.
    """

    FAMILY = "ntm"
    SERIAL_VERSION = 1
    METRICS = ("perplexity", "npmi", "npmi_unseen_minus_1", "negative_elbo_per_word", "n_rows")

    def __init__(
        self,
        params: dict[str, np.ndarray],
        hidden_layers: tuple[int, ...],
        activation: str,
        vocabulary: Any = None,
        n_seen: int = 0,
        top_n: int = _TOP_N,
        progressive_perplexity: float = float("nan"),
        heldout: dict[str, float] | None = None,
    ):
        self.params = params
        self.hidden_layers = tuple(int(h) for h in hidden_layers)
        self.activation = activation
        self.vocabulary = None if vocabulary is None else [str(w) for w in vocabulary]
        self.n_seen = n_seen
        self.top_n = top_n
        self.progressive_perplexity = progressive_perplexity
        self.heldout = dict(heldout or {})

    @property
    def input_spec(self) -> MatrixSpec:
        return MatrixSpec(self.params["topics"].shape[1])

    @property
    def num_topics(self) -> int:
        return self.params["topics"].shape[0]

    @property
    def topics(self) -> np.ndarray:
        """The topics' word weights, float64 (K, V), centred over the topics: the
        mixture sums to 1, so a word weight shared by every topic is the decoder's
        background (its bias), not a part of any topic."""
        topics = self.params["topics"].astype(np.float64)
        return topics - topics.mean(axis=0)

    @property
    def topic_word_matrix(self) -> np.ndarray:
        """Each topic's distribution over the words, float64 (K, V): the softmax of its
        centred weights (its expert in the product, the background apart)."""
        return softmax(self.topics)

    def top_words(self, n: int = _TOP_N) -> np.ndarray:
        """The ``n`` top word ids of each topic (K, n), best first."""
        return top_word_ids(self.topics, n)

    def top_words_text(self, n: int = _TOP_N) -> list[list[str]]:
        """The top words of each topic as words (ids as strings without a vocabulary)."""
        ids = self.top_words(n)
        if self.vocabulary is None:
            return [[str(i) for i in row] for row in ids]
        return [[self.vocabulary[i] for i in row] for row in ids]

    def _features(self, block: Any) -> sp.csr_matrix:
        return _counts(self._check(block), type(self).__name__)

    def topic_weights(self, block: Any) -> np.ndarray:
        """SageMaker's inference output: each document's topic mixture (rows, K)."""
        return forward(self.params, self._features(block), len(self.hidden_layers), self.activation)

    def evaluate(self, block: Any) -> np.ndarray:
        """``topic_weights`` of each document, (rows, num_topics)."""
        return self.topic_weights(block)

    def metric_sums(self, block: Any, coherence: bool = True) -> dict[str, float]:
        """Negative ELBO and words (perplexity) and, with ``coherence``, the document
        frequencies of the top words and of their within-topic pairs (NPMI): sums that
        add up over any split of the documents."""
        x = self._features(block)
        noise = _row_noise(x, _PERPLEXITY_DRAWS, self.num_topics)
        recon, kl = elbo_terms(self.params, x, len(self.hidden_layers), self.activation, noise)
        sums = {
            "n_rows": float(x.shape[0]),
            "words": float(x.data.sum()),
            "negative_elbo": float(-(recon - kl).sum()),
        }
        if coherence:
            _, df, co = coherence_counts(self.top_words(self.top_n), x)
            sums.update({f"df:{w}": float(c) for w, c in df.items()})
            sums.update({f"co:{a},{b}": float(c) for (a, b), c in co.items()})
        return sums

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """``perplexity``: exp of the negative ELBO per word (a bound: the true per-word
        perplexity is at most this); ``npmi``: mean NPMI of the topics' top words on
        these documents, a pair that never co-occurs scoring 0 (Scholar's convention, the
        literature's); ``npmi_unseen_minus_1``: the same with such a pair at -1."""
        n, words = sums.get("n_rows", 0.0), sums.get("words", 0.0)
        nan = float("nan")
        out = {
            "n_rows": n,
            "negative_elbo_per_word": sums["negative_elbo"] / words if words else nan,
        }
        out["perplexity"] = float(np.exp(out["negative_elbo_per_word"])) if words else nan
        top = self.top_words(self.top_n)
        if n and "df:" + str(int(top[0, 0])) in sums:
            df = {int(k[3:]): v for k, v in sums.items() if k.startswith("df:")}
            co = {
                tuple(int(w) for w in k[3:].split(",")): v
                for k, v in sums.items()
                if k.startswith("co:")
            }
            out["npmi"] = float(npmi_from_counts(top, n, df, co, unseen=0.0).mean())
            minus_1 = npmi_from_counts(top, n, df, co, unseen=-1.0)
            out["npmi_unseen_minus_1"] = float(minus_1.mean())
        else:
            out["npmi"] = out["npmi_unseen_minus_1"] = nan
        return out

    def topic_uniqueness(self, n: int | None = None) -> float:
        return topic_uniqueness(self.top_words(n or self.top_n))

    def wetc(self, word_vectors: np.ndarray, n: int | None = None) -> np.ndarray:
        """WETC of each topic given word vectors (V, dim)."""
        return wetc(self.top_words(n or self.top_n), word_vectors)

    def describe(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "num_topics": self.num_topics,
            "n_seen": self.n_seen,
            "progressive_perplexity": self.progressive_perplexity,
            "heldout": self.heldout,
            "topic_uniqueness": self.topic_uniqueness(),
            "top_words": [" ".join(words) for words in self.top_words_text()],
        }

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "hidden_layers": list(self.hidden_layers),
            "activation": self.activation,
            "n_seen": self.n_seen,
            "top_n": self.top_n,
            "progressive_perplexity": self.progressive_perplexity,
            "heldout": self.heldout,
        }
        arrays = {f"param.{name}": value for name, value in self.params.items()}
        if self.vocabulary is not None:
            arrays.update(_packed_words(self.vocabulary))
        return meta, arrays

    @classmethod
    def _from_payload(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> NTMModel:
        params = {k[len("param.") :]: v for k, v in arrays.items() if k.startswith("param.")}
        unknown = sorted(set(arrays) - {f"param.{name}" for name in params} - _WORD_ARRAYS)
        if unknown:  # e.g. a renamed input.norm: read as a model without the cap otherwise
            raise IncompatibleStateError(f"NTM model payload: unknown array(s) {unknown}.")
        layers = tuple(int(h) for h in meta["hidden_layers"])
        k, v = params["topics"].shape
        expected = parameter_shapes(
            v, layers, k, "mu_bn.mean" in params, "dec.mix" in params, "input.norm" in params
        )
        if {n: s for n, (s, _) in expected.items()} != {n: a.shape for n, a in params.items()}:
            raise IncompatibleStateError("NTM model arrays do not fit its layers and topics.")
        return cls(
            params,
            layers,
            str(meta["activation"]),
            vocabulary=_unpacked_words(arrays, v),
            n_seen=int(meta["n_seen"]),
            top_n=int(meta["top_n"]),
            progressive_perplexity=float(meta["progressive_perplexity"]),
            heldout=meta["heldout"],
        )

    def __repr__(self) -> str:
        return (
            f"NTMModel(num_topics={self.num_topics}, n_features={self.n_features}, "
            f"n_seen={self.n_seen})"
        )


NTMState.MODEL = NTMModel
