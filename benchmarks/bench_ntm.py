"""NTM quality and speed against online LDA (scikit-learn) and gensim's LdaModel.

Every model is scored the same way on the held-out split:

* perplexity: ``exp(-sum_d ELBO_d / words)``, each document's evidence lower bound with
  the topics as fixed parameters (NTM: ``E_q[log p(x|z)] - KL``, 8 draws; LDA: the
  variational bound of the document given ``gamma``, i.e. scikit-learn's
  ``_approx_bound`` / gensim's ``bound`` *without* their topic-word term, which those
  libraries add unscaled to the held-out documents' bound); LDA's
  ``perplexity_point_topics`` uses the topics as point estimates ``lam / lam.sum(1)``
  instead of ``E[log beta]``, exactly as the NTM's topics are (the strict comparison);
* NPMI of each topic's top-10 words on the held-out documents, by one function
  (``beam_ml.algorithms.ntm.npmi_coherence``) for every model: ``npmi`` is the
  literature's reference (Scholar's ``compute_npmi.py``, Card et al. 2018: document
  co-occurrence, a pair of top words that never co-occurs scores 0);
  ``npmi_unseen_minus_1`` scores such a pair -1 (the limit; near gensim's ``c_npmi``);
  ``npmi_train_docs`` is ``npmi`` with the training documents as the reference corpus;
* TU of the top-10 words (``topic_uniqueness``); documents/s of training, end to end.
* ``--memory 1 4``: the state's bytes and the peak RSS of one streaming pass over the
  corpus repeated 1 and 4 times (each in a fresh process).
* ``--merge-ways 1 2 4``: the NTM as 1, 2 and 4 replicas, each on its share of the
  training documents (a seeded random split), merged after every epoch as TrainEpochs
  does: what merging costs, scored as above.
* ``--validation``: fit on 80% of the training documents and score on the other 20%
  (``validation_split``), to choose settings without the test split.

Usage (20 Newsgroups 1,995 words, 50 topics, and UCI KOS, 80/20 split by document)::

    PYTHONPATH=. BEAM_ML_DATA=/work/shared/data OMP_NUM_THREADS=1 \\
        /work/main/.venv/bin/python benchmarks/bench_ntm.py --corpus 20newsgroups \\
        --seeds 0 1 --ntm-epochs 30 --lda-passes 5

The NTM's settings (``--ntm-options``, JSON of NTMConfig fields) default to NTMConfig's
defaults: ProdLDA's choices (Adam with beta1 0.99, batch norm, dropout 0.2, ReLU) at 0.004
and 100 documents a step, early stopping (tolerance 0.001, patience 10) on the held-out
sample carved from the training documents. Session 28's settings were
``'{"learning_rate": 0.002, "mini_batch_size": 200, "num_patience_epochs": 3}'``;
SageMaker's own defaults are ``'{"optimizer": "adadelta", "learning_rate": 0.01,
"adam_beta1": 0.9, "batch_norm": false, "dropout": 0.0, "encoder_layers_activation":
"sigmoid", "mini_batch_size": 256, "num_patience_epochs": 3}'``.

gensim runs in its own venv (numpy >= 1.24 there; MXNet needs < 1.24)::

    /usr/bin/python3.11 -m venv /work/wt/venvs/gensim
    /work/wt/venvs/gensim/bin/pip install gensim

and is skipped with a note when that venv is absent (``--gensim-python``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp
from scipy.special import digamma, gammaln

DATA = os.environ.get("BEAM_ML_DATA", "/work/shared/data")
GENSIM = "/work/wt/venvs/gensim/bin/python"


# --- corpora -------------------------------------------------------------------------------------
def _feat(path: str, vocabulary: int) -> sp.csr_matrix:
    """NVDM ``.feat``: ``label id:count ...``, ids 1-based."""
    rows, cols, vals = [], [], []
    with open(path) as lines:
        for row, line in enumerate(lines):
            for token in line.split()[1:]:
                word, count = token.split(":")
                rows.append(row)
                cols.append(int(word) - 1)
                vals.append(float(count))
    return sp.csr_matrix((vals, (rows, cols)), shape=(row + 1, vocabulary), dtype=np.float32)


def corpus(name: str) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    if name == "20newsgroups":
        base = f"{DATA}/20newsgroups-bow"
        return _feat(f"{base}/train.feat", 1995), _feat(f"{base}/test.feat", 1995)
    with gzip.open(f"{DATA}/uci-bow-kos/docword.kos.txt.gz", "rt") as f:
        docs, words, _ = (int(f.readline()) for _ in range(3))
        triples = np.loadtxt(f, dtype=np.int64)
    x = sp.csr_matrix(
        (triples[:, 2].astype(np.float32), (triples[:, 0] - 1, triples[:, 1] - 1)),
        shape=(docs, words),
    )
    order = np.random.default_rng(0).permutation(docs)
    cut = int(0.8 * docs)
    return x[order[:cut]], x[order[cut:]]


def validation_split(train: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """80/20 of the training documents (``default_rng(1)``; KOS: 2,195 to fit, 549 to
    score), for choosing settings without seeing the test split."""
    order = np.random.default_rng(1).permutation(train.shape[0])
    cut = int(0.8 * train.shape[0])
    return train[order[:cut]], train[order[cut:]]


# UCI KOS's NTM settings, used when --ntm-options / --ntm-epochs are not given: its 2,744
# training documents make only 14-27 steps an epoch at 100-200 documents a step, too few
# for the network. Chosen on documents held out from KOS's training split, never the test
# split (BENCHMARKS.md, NTM, "UCI KOS settings"): 64 documents a step, Adam 0.002, one
# encoder layer of 100 (fewer parameters to fit from few documents), no early stop; session
# 30 ("UCI KOS, session 30"): 3 posterior draws a document in a step, 120 epochs, the rate
# decayed by 0.9 an epoch over the last 20 (validation perplexity -2.5% against 100 epochs
# of one draw at a constant rate).
KOS_NTM_OPTIONS = {"learning_rate": 0.002, "mini_batch_size": 64, "encoder_layers": "100",
                   "num_patience_epochs": 120, "noise_samples": 3,
                   "learning_rate_decay": 0.9, "learning_rate_decay_start": 100}  # fmt: skip
KOS_NTM_EPOCHS = 120


def ntm_settings(args, parser) -> tuple[dict, int]:
    """The NTM's options and epochs: the command line's, or the corpus's own (KOS)."""
    options, epochs = json.loads(args.ntm_options), args.ntm_epochs
    if args.corpus == "kos":
        if args.ntm_options == parser.get_default("ntm_options"):
            options = {**options, **KOS_NTM_OPTIONS}
        if epochs == parser.get_default("ntm_epochs"):
            epochs = KOS_NTM_EPOCHS
    return options, epochs


# --- one scoring for every model -----------------------------------------------------------------
def lda_bound(
    x: sp.csr_matrix, gamma: np.ndarray, lam: np.ndarray, alpha: np.ndarray, point: bool = False
) -> float:
    """Sum over documents of the LDA variational bound given ``gamma`` (docs, K), with
    ``E[log beta]`` from ``lam`` (K, V): scikit-learn's ``_approx_bound`` without the
    topic-word term. ``point``: the topics as the point estimate ``lam / lam.sum(1)``
    instead (``log E[beta]``), as the NTM's topics are: the same bound with the topics
    fixed, a little tighter (``E[log beta] < log E[beta]``, most for rare words)."""
    e_log_theta = digamma(gamma) - digamma(gamma.sum(1, keepdims=True))
    if point:
        e_log_beta = np.log(lam / lam.sum(1, keepdims=True))
    else:
        e_log_beta = digamma(lam) - digamma(lam.sum(1, keepdims=True))
    x = x.tocsr()
    score = 0.0
    for start in range(0, x.shape[0], 500):
        part, t = x[start : start + 500], e_log_theta[start : start + 500]
        rows = np.repeat(np.arange(part.shape[0]), np.diff(part.indptr))
        # log sum_k exp(E log theta_dk + E log beta_kw) for each non-zero
        a = t[rows] + e_log_beta[:, part.indices].T
        m = a.max(1)
        score += float(part.data @ (m + np.log(np.exp(a - m[:, None]).sum(1))))
    alpha = np.broadcast_to(alpha, gamma.shape[1:])
    score += float(((alpha - gamma) * e_log_theta).sum() + (gammaln(gamma) - gammaln(alpha)).sum())
    score += float((gammaln(alpha.sum()) - gammaln(gamma.sum(1))).sum())
    return score


def _perplexity(bound: float, test: sp.csr_matrix) -> float:
    return float(np.exp(-bound / test.sum()))


def scores(name: str, top: np.ndarray, bound: float, test: sp.csr_matrix, seconds: float, n: int,
           train: sp.csr_matrix):  # fmt: skip
    from beam_ml.algorithms.ntm import npmi_coherence, topic_uniqueness

    return {
        "model": name,
        "perplexity": _perplexity(bound, test),
        "npmi": float(npmi_coherence(top, test, unseen=0.0).mean()),
        "npmi_unseen_minus_1": float(npmi_coherence(top, test, unseen=-1.0).mean()),
        "npmi_train_docs": float(npmi_coherence(top, train, unseen=0.0).mean()),
        "tu": topic_uniqueness(top),
        "train_seconds": round(seconds, 1),
        "docs_per_second": round(n / seconds, 1),
    }


# --- the models ----------------------------------------------------------------------------------
def run_ntm(train, test, topics, seed, epochs, options, report_epochs=()):
    """The NTM's scores after ``epochs`` (or an early stop); also printed after each
    of ``report_epochs`` (the seconds then include the scoring before)."""
    from beam_ml.algorithms.ntm import NTMConfig, NTMState

    config = NTMConfig(
        feature_dim=train.shape[1], num_topics=topics, epochs=epochs, seed=seed, **options
    )
    start = time.perf_counter()
    state = NTMState(config)
    for epoch in range(epochs):
        if epoch:
            state = state.continued()
        for begin in range(0, train.shape[0], 2000):
            state.update(train[begin : begin + 2000])
        if state.stopped:  # stopped at this epoch's start: it trained `epoch` epochs
            return _ntm_scores(state, train, test, start, epoch - 1)
        if epoch + 1 in report_epochs and epoch + 1 < epochs:
            print(json.dumps({"seed": seed, **_ntm_scores(state, train, test, start, epoch)}))
    return _ntm_scores(state, train, test, start, epoch)


def _ntm_scores(state, train, test, start, epoch):
    model = state.derive()
    seconds = time.perf_counter() - start
    sums = model.metric_sums(test, coherence=False)
    out = scores("beam_ml NTM", model.top_words(10), -sums["negative_elbo"], test, seconds,
                 train.shape[0] * (epoch + 1), train)  # fmt: skip
    out["epochs"] = epoch + 1
    return out


def run_sklearn(train, test, topics, seed, passes):
    from sklearn.decomposition import LatentDirichletAllocation

    lda = LatentDirichletAllocation(
        n_components=topics, learning_method="online", max_iter=passes, random_state=seed,
        batch_size=256, n_jobs=1,
    )  # fmt: skip
    start = time.perf_counter()
    lda.fit(train)
    seconds = time.perf_counter() - start
    gamma = lda._unnormalized_transform(test)
    alpha = np.full(topics, lda.doc_topic_prior_)
    bound = lda_bound(test, gamma, lda.components_, alpha)
    top = np.argsort(-lda.components_, axis=1)[:, :10]
    out = scores("sklearn online LDA", top, bound, test, seconds, train.shape[0] * passes, train)
    out["perplexity_point_topics"] = _perplexity(
        lda_bound(test, gamma, lda.components_, alpha, point=True), test
    )
    out["passes"] = passes
    return out


def gensim_worker(path: str) -> None:
    """In the gensim venv: train, infer the test documents, save gamma and lambda."""
    from gensim.models import LdaModel

    arrays = np.load(path)
    train = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), arrays["shape"])
    test = sp.csr_matrix(
        (arrays["t_data"], arrays["t_indices"], arrays["t_indptr"]), arrays["t_shape"]
    )

    def bow(x):
        return [list(zip(r.indices.tolist(), r.data.tolist(), strict=True)) for r in x]

    topics, seed, passes = (int(v) for v in arrays["settings"])
    start = time.perf_counter()
    lda = LdaModel(
        bow(train), num_topics=topics, id2word={i: str(i) for i in range(train.shape[1])},
        passes=passes, random_state=seed, chunksize=2000, alpha="auto", eta="auto",
    )  # fmt: skip
    seconds = time.perf_counter() - start
    gamma, _ = lda.inference(bow(test))
    np.savez(path, gamma=gamma, lam=lda.state.get_lambda(), alpha=lda.alpha, seconds=seconds)


def run_gensim(train, test, topics, seed, passes, python):
    if not os.path.exists(python):
        return {"model": "gensim LdaModel", "skipped": f"no gensim venv at {python}"}
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/corpus.npz"
        np.savez(
            path, data=train.data, indices=train.indices, indptr=train.indptr,
            shape=train.shape, t_data=test.data, t_indices=test.indices,
            t_indptr=test.indptr, t_shape=test.shape, settings=[topics, seed, passes],
        )  # fmt: skip
        subprocess.run([python, __file__, "--gensim-worker", path], check=True)
        out = np.load(path)
        bound = lda_bound(test, out["gamma"], out["lam"], out["alpha"])
        point = lda_bound(test, out["gamma"], out["lam"], out["alpha"], point=True)
        top = np.argsort(-out["lam"], axis=1)[:, :10]
        seconds = float(out["seconds"])
    result = scores("gensim LdaModel", top, bound, test, seconds, train.shape[0] * passes, train)
    result["perplexity_point_topics"] = _perplexity(point, test)
    result["passes"] = passes
    return result


# --- merges of replicas --------------------------------------------------------------------------
def run_merges(train, test, topics, seed, epochs, options, ways):
    """The NTM trained as ``ways`` replicas, each on its share of the training documents
    (a seeded random split), merged after every epoch and the round finished, as
    TrainEpochs does; ``ways`` 1 is one model on all of them. Scores on the test split."""
    from functools import reduce

    from beam_ml.algorithms.ntm import NTMConfig, NTMState

    config = NTMConfig(
        feature_dim=train.shape[1], num_topics=topics, epochs=epochs, seed=seed, **options
    )
    parts = np.array_split(np.random.default_rng(seed).permutation(train.shape[0]), ways)
    shares = [train[np.sort(part)] for part in parts]
    begin, state = time.perf_counter(), NTMState(config)
    for epoch in range(epochs):
        start = state.continued() if epoch else state
        if start.stopped:
            break
        replicas = []
        for share in shares:
            replica = start._copy()
            for first in range(0, share.shape[0], 2000):
                replica.update(share[first : first + 2000])
            replicas.append(replica)
        state = reduce(lambda a, b: a.merge(b), replicas).finish_round(start if epoch else None)
    out = _ntm_scores(state, train, test, begin, epoch if not start.stopped else epoch - 1)
    return {"ways": ways, **out}


# --- memory as the corpus grows ------------------------------------------------------------------
def memory_run(name: str, topics: int, scale: int, options: dict) -> dict:
    """One streaming pass (epochs=1) over the training corpus repeated ``scale`` times,
    block by block (the corpus itself is held once, whatever the scale): the state's
    checkpoint bytes and the process's peak RSS at the end."""
    import resource

    from beam_ml.algorithms.ntm import NTMConfig, NTMState

    train, _ = corpus(name)
    config = NTMConfig(feature_dim=train.shape[1], num_topics=topics, epochs=1, **options)
    state = NTMState(config)
    start = time.perf_counter()
    for _ in range(scale):
        for begin in range(0, train.shape[0], 2000):
            state.update(train[begin : begin + 2000])
    return {
        "scale": scale,
        "documents": state.n_seen,
        "state_bytes": len(state.to_bytes()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gensim-worker")
    parser.add_argument("--corpus", default="20newsgroups", choices=["20newsgroups", "kos"])
    parser.add_argument("--topics", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ntm-epochs", type=int, default=30)
    parser.add_argument("--ntm-report-epochs", type=int, nargs="*", default=[],
                        help="also score the NTM after these epochs")  # fmt: skip
    parser.add_argument("--lda-passes", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["ntm", "sklearn", "gensim"])
    parser.add_argument("--gensim-python", default=GENSIM)
    parser.add_argument("--memory", type=int, nargs="+", metavar="SCALE",
                        help="measure memory instead: one streaming pass over the corpus "
                        "repeated SCALE times, each scale in a fresh process")  # fmt: skip
    parser.add_argument("--memory-run", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ntm-options", default="{}",
                        help="JSON of NTMConfig fields (default: NTMConfig's defaults)")  # fmt: skip
    parser.add_argument("--merge-ways", type=int, nargs="+", metavar="R",
                        help="measure merges instead: the NTM as R replicas merged after "
                        "every epoch (1: one model), for each R")  # fmt: skip
    parser.add_argument("--validation", action="store_true",
                        help="score on 20%% of the training documents, fitting on the other "
                        "80%% (validation_split); the test split is not used")  # fmt: skip
    args = parser.parse_args()
    if args.gensim_worker:
        gensim_worker(args.gensim_worker)
        return
    if args.memory_run:
        options = json.loads(args.ntm_options)
        result = memory_run(args.corpus, args.topics, args.memory_run, options)
        print(json.dumps({"corpus": args.corpus, **result}), flush=True)
        return
    if args.memory:
        for scale in args.memory:
            command = [sys.executable, __file__, "--corpus", args.corpus, "--topics",
                       str(args.topics), "--ntm-options", args.ntm_options,
                       "--memory-run", str(scale)]  # fmt: skip
            subprocess.run(command, check=True)
        return
    train, test = corpus(args.corpus)
    if args.validation:
        train, test = validation_split(train)
    name = f"{args.corpus} (validation split)" if args.validation else args.corpus
    print(f"# {name}: train {train.shape}, test {test.shape}, {args.topics} topics")
    for seed in args.seeds:
        if args.merge_ways:
            options, epochs = ntm_settings(args, parser)
            for ways in args.merge_ways:
                result = run_merges(train, test, args.topics, seed, epochs, options, ways)
                print(json.dumps({"seed": seed, **result}), flush=True)
            continue
        if "ntm" in args.models:
            options, epochs = ntm_settings(args, parser)
            result = run_ntm(train, test, args.topics, seed, epochs, options,
                             args.ntm_report_epochs)  # fmt: skip
            print(json.dumps({"seed": seed, **result}), flush=True)
        if "sklearn" in args.models:
            result = run_sklearn(train, test, args.topics, seed, args.lda_passes)
            print(json.dumps({"seed": seed, **result}), flush=True)
        if "gensim" in args.models:
            result = run_gensim(train, test, args.topics, seed, args.lda_passes, args.gensim_python)
            print(json.dumps({"seed": seed, **result}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
