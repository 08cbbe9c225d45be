"""The Neural Topic Model's network: a variational autoencoder over bags of words.

For a document's word counts ``x`` (V,)::

    h        = MLP(log(1 + x))                    encoder_layers, their activation
    mu, logv = W_mu h + b_mu, W_v h + b_v         (K,) each  [batch norm: normalized]
    z        = mu + exp(logv / 2) * eps           eps ~ N(0, I): the reparameterization
    theta    = softmax(z)                         the topic mixture (logistic normal)
    logits   = theta @ beta + b                   (V,) [batch norm: BN(theta @ beta)]
    loss     = -sum_w x_w log softmax(logits)_w + KL(N(mu, v) || N(0, prior_var))

``beta`` (K, V) are the topics: row ``k`` is topic ``k``'s word logits. The decoder is a
product of experts over the topics (ProdLDA, Srivastava & Sutton 2017), whose topics are
more coherent than a mixture's; the prior is the Laplace approximation of a symmetric
Dirichlet(1) in the softmax basis (mean 0, variance ``1 - 1/K``), as ProdLDA's.

The encoder reads ``log(1 + counts)``: raw counts put long documents far outside the
range the encoder (and its batch statistics) saw in training, and their posterior
variances and KL terms blew up on held-out documents (a perplexity of 1e15 on 20
Newsgroups with batch norm).

The parameters live on the host as numpy arrays (the state owns them); a
:class:`NTMTrainer` loads them onto its device, takes a list of mini-batch steps with
MXNet Gluon (autograd, MXNet's optimizers) and writes parameters and optimizer state back.
The random draws (``eps``, dropout masks) are numpy's, seeded by ``(seed, step)``, so a
step is the same on any device and however the rows were cut into blocks.
:func:`forward` is the same network in numpy (inference and evaluation need no MXNet).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from beam_ml.nn import engine

__all__ = [
    "NTMTrainer",
    "ACTIVATIONS",
    "NTM_OPTIMIZERS",
    "parameter_shapes",
    "slot_count",
    "initial_parameters",
    "forward",
    "elbo_terms",
    "prior_variance",
]

ACTIVATIONS = ("sigmoid", "tanh", "relu")
NTM_OPTIMIZERS = ("adadelta", "sgd", "adam", "adagrad", "rmsprop")
_SLOTS = {"adadelta": 2, "sgd": 0, "adam": 2, "adagrad": 1, "rmsprop": 1}
_BN_EPS = 1e-5
# The batch norm's moving statistics (what inference uses) are a moving average whose
# window grows with the steps taken: momentum 1 - 10 / (step + 9), i.e. 0 at the first
# step (its batch replaces the initial statistics), about the last tenth of the steps
# after that, 0.99 (~100 steps) from step 991 on. A fixed 0.9 (~10 steps) followed the
# last mini-batches and the held-out perplexity of 20 Newsgroups jumped by 2-4% from epoch
# to epoch (995 against 957 at 40 epochs); an average over all steps (1 - 1 / (step + 9))
# kept the statistics of a network still growing, so one epoch scored 6,591-9,339 (0.3-0.4
# of a unit's variance and a mean off by 0.3-0.6 sd) against 2,020-2,136 (BENCHMARKS.md, NTM).
_BN_MOMENTUM = 0.99
_BN_WINDOW = 10.0


def slot_count(optimizer: str) -> int:
    """Optimizer state arrays per parameter (MXNet's: Adam mean and variance ...)."""
    return _SLOTS[optimizer]


def prior_variance(num_topics: int) -> float:
    """Variance of the logistic-normal prior: Laplace approximation of Dirichlet(1)."""
    return 1.0 - 1.0 / num_topics


def parameter_shapes(
    vocabulary: int,
    layers: tuple[int, ...],
    num_topics: int,
    batch_norm: bool,
    anneal: bool = False,
    input_norm: bool = False,
) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Every array of the network by name: (shape, trained by gradient). Moving batch
    statistics are arrays too (not trained: updated by the forward pass). ``anneal``:
    the decoder has both its batch-normalized and its plain (biased) logits, mixed by
    ``dec.mix`` (the batch norm's share, set by the schedule, not trained).
    ``input_norm``: ``input.norm`` holds the cap on the encoder input's norm (see
    :func:`encoder_input`; not trained)."""
    shapes: dict[str, tuple[tuple[int, ...], bool]] = {}
    width = vocabulary
    for i, units in enumerate(layers):
        shapes[f"enc{i}.weight"] = ((units, width), True)
        shapes[f"enc{i}.bias"] = ((units,), True)
        width = units
    for head in ("mu", "logv"):
        shapes[f"{head}.weight"] = ((num_topics, width), True)
        shapes[f"{head}.bias"] = ((num_topics,), True)
    shapes["topics"] = ((num_topics, vocabulary), True)  # beta
    if batch_norm:
        for name, size in (("mu_bn", num_topics), ("logv_bn", num_topics), ("dec_bn", vocabulary)):
            shapes[f"{name}.beta"] = ((size,), True)
            shapes[f"{name}.mean"] = ((size,), False)
            shapes[f"{name}.var"] = ((size,), False)
    if not batch_norm or anneal:
        shapes["dec.bias"] = ((vocabulary,), True)
    if batch_norm and anneal:
        shapes["dec.mix"] = ((1,), False)
    if input_norm:
        shapes["input.norm"] = ((1,), False)
    return shapes


def initial_parameters(
    shapes: dict[str, tuple[tuple[int, ...], bool]], seed: int
) -> dict[str, np.ndarray]:
    """Seeded float32 initial values: Xavier-uniform weights, zero biases, unit
    variances; the same on every replica and device (engine.initial_values)."""
    out = {}
    for stream, (name, (shape, _)) in enumerate(shapes.items()):
        if len(shape) == 2:
            scale = float(np.sqrt(6.0 / (shape[0] + shape[1])))
            out[name] = engine.initial_values(
                shape, "uniform", sigma=None, scale=scale, value=None, seed=seed, stream=stream
            )
        else:
            value = 1.0 if name.endswith((".var", ".mix")) else 0.0
            out[name] = np.full(shape, value, dtype=np.float32)
    return out


# --- the network in numpy: inference and evaluation ----------------------------------------------
def _activation(name: str, h: np.ndarray) -> np.ndarray:
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * h))
    if name == "tanh":
        return np.tanh(h)
    return np.maximum(h, 0.0)


def _bn(params: dict[str, np.ndarray], name: str, h: np.ndarray) -> np.ndarray:
    """Batch norm at inference (moving statistics; scale fixed at 1, as ProdLDA's)."""
    var = params[f"{name}.var"].astype(np.float64)
    return (h - params[f"{name}.mean"]) / np.sqrt(var + _BN_EPS) + params[f"{name}.beta"]


def encoder_input(params: dict[str, np.ndarray], features: Any) -> Any:
    """What the encoder reads: ``log(1 + count)`` (long documents stay in range), a
    row scaled down to the norm ``input.norm`` when its norm is larger. The longest
    documents (20 Newsgroups: norms 2.9 / 5.1 / 18.9 at the 10th / 50th / 99th
    percentiles) otherwise lie far outside what the encoder fits and get posterior log
    variances up to 13-21: after one epoch one document's KL term was two thirds of the
    corpus's. The cap (4 by default, about a normalization of most documents) also
    lowered the held-out perplexity of long runs (BENCHMARKS.md, NTM, session 30)."""
    h = features.log1p() if sp.issparse(features) else np.log1p(features)
    if "input.norm" not in params:
        return h
    squares = h.multiply(h).sum(axis=1) if sp.issparse(h) else (h * h).sum(axis=1)
    norm = np.sqrt(np.asarray(squares, dtype=np.float64).ravel())
    scale = np.minimum(1.0, float(params["input.norm"][0]) / np.maximum(norm, 1e-12))
    return sp.diags(scale) @ h if sp.issparse(h) else h * scale[:, None]


def encode(
    params: dict[str, np.ndarray], features: Any, layers: int, activation: str
) -> tuple[np.ndarray, np.ndarray]:
    """The posterior's ``mu`` and ``log variance`` of each row, float64 (rows, K)."""
    h = encoder_input(params, features)
    for i in range(layers):
        w = params[f"enc{i}.weight"].astype(np.float64)
        h = _activation(activation, np.asarray(h @ w.T) + params[f"enc{i}.bias"])
    mu = h @ params["mu.weight"].T.astype(np.float64) + params["mu.bias"]
    logv = h @ params["logv.weight"].T.astype(np.float64) + params["logv.bias"]
    if "mu_bn.mean" in params:
        mu, logv = _bn(params, "mu_bn", mu), _bn(params, "logv_bn", logv)
    return mu, logv


def decode(params: dict[str, np.ndarray], theta: np.ndarray) -> np.ndarray:
    """Log word probabilities (rows, V) of topic mixtures ``theta`` (rows, K)."""
    logits = theta @ params["topics"].astype(np.float64)
    mix = float(params["dec.mix"][0]) if "dec.mix" in params else 1.0
    if "dec_bn.mean" in params and mix >= 1.0:
        return _log_softmax(_bn(params, "dec_bn", logits))
    plain = _log_softmax(logits + params["dec.bias"])
    if "dec_bn.mean" not in params or mix <= 0.0:
        return plain
    # the annealed decoder: a mixture of the two word distributions (Scholar's)
    return np.logaddexp(np.log(mix) + _log_softmax(_bn(params, "dec_bn", logits)),
                        np.log1p(-mix) + plain)  # fmt: skip


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward(
    params: dict[str, np.ndarray], features: Any, layers: int, activation: str
) -> np.ndarray:
    """Topic weights of each row (SageMaker's inference: the mixture at the posterior
    mean), float64 (rows, K)."""
    mu, _ = encode(params, features, layers, activation)
    return softmax(mu)


def elbo_terms(
    params: dict[str, np.ndarray],
    features: sp.csr_matrix,
    layers: int,
    activation: str,
    noise: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per document: the reconstruction log likelihood ``E_q[log p(x | z)]`` averaged
    over the draws ``noise`` (samples, rows, K) and ``KL(q || prior)``, float64 (rows,)."""
    mu, logv = encode(params, features, layers, activation)
    k = mu.shape[1]
    prior = prior_variance(k)
    kl = 0.5 * (np.exp(logv) / prior + mu * mu / prior - 1.0 - logv + np.log(prior)).sum(axis=1)
    sigma = np.exp(0.5 * logv)
    x = features.tocsr()
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    recon = np.zeros(x.shape[0])
    for eps in noise:
        log_p = decode(params, softmax(mu + sigma * eps))  # (rows, V)
        recon += np.bincount(rows, x.data * log_p[rows, x.indices], minlength=x.shape[0])
    return recon / max(len(noise), 1), kl


# --- training with MXNet Gluon -------------------------------------------------------------------
class NTMTrainer:
    """Mini-batch steps of the NTM on one MXNet device. Not part of the state.

    Parameters
    ----------
    device : str
        'cpu', 'gpu' or 'gpu:N'.
    shapes : dict
        :func:`parameter_shapes`.
    layers : int
        Encoder layers.
    activation : str
    optimizer : str
        One of :data:`NTM_OPTIMIZERS` (MXNet's implementations; AdaDelta takes no
        learning rate, as MXNet's).
    optimizer_params : dict
        learning_rate, wd, rescale_grad, clip_gradient (None: no clipping).
    dropout : float
        Dropout of the last encoder layer and of the topic mixture while training.
    seed : int
    noise_samples : int
        Posterior draws per document in a step (their mean reconstruction loss).
    """

    def __init__(
        self,
        device: str,
        shapes: dict[str, tuple[tuple[int, ...], bool]],
        layers: int,
        activation: str,
        optimizer: str,
        optimizer_params: dict[str, Any],
        dropout: float,
        seed: int,
        noise_samples: int = 1,
    ):
        self.mx = engine.mxnet()
        self.nd = self.mx.nd
        self.ctx = engine.context(device)  # DeviceUnavailableError before any data
        self.shapes, self.layers, self.activation = shapes, layers, activation
        self.optimizer, self.optimizer_params = optimizer, optimizer_params
        self.dropout, self.seed = dropout, seed
        self.noise_samples = noise_samples
        self.trained = [name for name, (_, trained) in shapes.items() if trained]
        self.batch_norm = "mu_bn.mean" in shapes
        self.decoder_bn = "dec_bn.mean" in shapes
        self.annealed = "dec.mix" in shapes
        self.bn_momentum = _BN_MOMENTUM

    def _optimizer(self, steps: int, learning_rate: float | None) -> Any:
        p = dict(self.optimizer_params)
        if learning_rate is not None:
            p["learning_rate"] = learning_rate
        if self.optimizer == "adadelta":
            p.pop("learning_rate")
        if p.get("clip_gradient") is None:
            p.pop("clip_gradient", None)
        return self.mx.optimizer.create(self.optimizer, begin_num_update=steps, **p)

    def train(
        self,
        params: dict[str, np.ndarray],
        slots: dict[str, list[np.ndarray]],
        steps: int,
        batches: list[Any],
        learning_rate: float | None = None,
    ) -> np.ndarray:
        """Takes one step per mini-batch (CSR rows) on ``params`` and ``slots`` (numpy,
        updated in place); returns each batch's summed loss before its step, its rows and
        its words (batches, 3), the progressive validation of an unsupervised model.
        ``learning_rate``: these steps' rate instead of ``optimizer_params``'."""
        nd, ctx = self.nd, self.ctx
        arrays = {name: nd.array(value, ctx=ctx) for name, value in params.items()}
        for name in self.trained:
            arrays[name].attach_grad()
        updater = self.mx.optimizer.get_updater(self._optimizer(steps, learning_rate))
        for index, name in enumerate(self.trained):
            if slots[name]:
                state = [nd.array(s, ctx=ctx) for s in slots[name]]
                updater.states[index] = state[0] if self.optimizer == "adagrad" else tuple(state)
                updater.states_synced[index] = True
        out = np.zeros((len(batches), 3))
        for b, rows in enumerate(batches):
            step = steps + b + 1
            x = _csr(rows)
            loss = self._step(arrays, x, step)
            out[b] = loss, x.shape[0], x.data.sum()
            grads = [arrays[name].grad for name in self.trained]
            updater(list(range(len(self.trained))), grads, [arrays[n] for n in self.trained])
        for name, value in arrays.items():
            params[name][...] = value.asnumpy()
        for index, name in enumerate(self.trained):
            state = updater.states.get(index)
            if state is not None:
                for target, value in zip(slots[name], _as_list(state), strict=True):
                    target[...] = value.asnumpy()
        return out

    def _step(self, arrays: dict[str, Any], x: sp.csr_matrix, step: int) -> float:
        """Forward and backward of one mini-batch; the gradients of the mean document
        loss are left in the arrays' ``grad``. Returns the summed loss (before the step)."""
        nd, mx, ctx = self.nd, self.mx, self.ctx
        rows, k = x.shape[0], self.shapes["mu.bias"][0][0]
        rng = np.random.default_rng([self.seed, step])
        self.bn_momentum = min(_BN_MOMENTUM, 1.0 - _BN_WINDOW / (step + _BN_WINDOW - 1.0))
        eps = nd.array(rng.standard_normal((rows, k), dtype=np.float32), ctx=ctx)
        hidden = self.shapes[f"enc{self.layers - 1}.bias"][0][0] if self.layers else x.shape[1]
        keep = 1.0 - self.dropout
        masks = [
            nd.array((rng.random(shape, dtype=np.float32) < keep) / keep, ctx=ctx)
            if self.dropout
            else None
            for shape in ((rows, hidden), (rows, k))
        ]
        if self.noise_samples > 1:  # more draws after the first's: one draw steps as before
            more = (self.noise_samples - 1) * rows
            eps = nd.concat(eps, nd.array(rng.standard_normal((more, k), dtype=np.float32),
                                          ctx=ctx), dim=0)  # fmt: skip
            if masks[1] is not None:
                extra = (rng.random((more, k), dtype=np.float32) < keep) / keep
                masks[1] = nd.concat(masks[1], nd.array(extra, ctx=ctx), dim=0)
        counts = nd.array(x.toarray(), ctx=ctx)  # (rows, V): a mini-batch is small
        prior = prior_variance(k)
        with mx.autograd.record():
            h = nd.log1p(counts)  # the encoder's input, as numpy's encoder_input
            if "input.norm" in arrays:
                norm = nd.sqrt(nd.sum(h * h, axis=1, keepdims=True))
                cap = arrays["input.norm"].reshape((1, 1))
                h = nd.broadcast_mul(h, nd.minimum(nd.broadcast_div(cap, nd.maximum(norm, 1e-12)), 1.0))
            for i in range(self.layers):
                units = self.shapes[f"enc{i}.bias"][0][0]
                h = nd.FullyConnected(
                    h, arrays[f"enc{i}.weight"], arrays[f"enc{i}.bias"], num_hidden=units
                )
                h = nd.Activation(h, act_type=self.activation)
            if masks[0] is not None:
                h = h * masks[0]
            mu = nd.FullyConnected(h, arrays["mu.weight"], arrays["mu.bias"], num_hidden=k)
            logv = nd.FullyConnected(h, arrays["logv.weight"], arrays["logv.bias"], num_hidden=k)
            if self.batch_norm:
                mu, logv = self._bn(arrays, "mu_bn", mu), self._bn(arrays, "logv_bn", logv)
            theta = nd.softmax(self._draws(mu) + nd.exp(0.5 * self._draws(logv)) * eps)
            if masks[1] is not None:
                theta = theta * masks[1]  # (draws * rows, K)
            logits = nd.dot(theta, arrays["topics"])  # (draws * rows, V)
            recon = -nd.sum(self._draws(counts) * self._log_p(arrays, logits), axis=1)
            if self.noise_samples > 1:
                recon = nd.mean(recon.reshape((self.noise_samples, rows)), axis=0)  # (rows,)
            kl = 0.5 * nd.sum(
                nd.exp(logv) / prior + mu * mu / prior - 1.0 - logv + np.log(prior), axis=1
            )
            loss = recon + kl
            mean = nd.mean(loss)
        mean.backward()
        return float(nd.sum(loss).asscalar())

    def _draws(self, a: Any) -> Any:
        """``a`` (rows, ...) repeated for each posterior draw of the step."""
        return a if self.noise_samples == 1 else self.nd.tile(a, reps=(self.noise_samples, 1))

    def _log_p(self, arrays: dict[str, Any], logits: Any) -> Any:
        """The decoder's log word probabilities: batch-normalized logits, plain logits
        plus a bias, or (annealed) the mixture of the two distributions with the batch
        norm's share ``dec.mix``, as numpy's :func:`decode`."""
        nd = self.nd
        mix = float(arrays["dec.mix"].asscalar()) if self.annealed else 1.0
        if self.decoder_bn and mix >= 1.0:
            return nd.log_softmax(self._bn(arrays, "dec_bn", logits))
        plain = nd.log_softmax(nd.broadcast_add(logits, arrays["dec.bias"].reshape((1, -1))))
        if not self.decoder_bn or mix <= 0.0:
            return plain
        normed = nd.log_softmax(self._bn(arrays, "dec_bn", logits)) + float(np.log(mix))
        plain = plain + float(np.log1p(-mix))
        top = nd.maximum(normed, plain)
        return top + nd.log(nd.exp(normed - top) + nd.exp(plain - top))

    def _bn(self, arrays: dict[str, Any], name: str, h: Any) -> Any:
        nd = self.nd
        gamma = nd.ones_like(arrays[f"{name}.beta"])
        return nd.BatchNorm(
            h,
            gamma,
            arrays[f"{name}.beta"],
            arrays[f"{name}.mean"],
            arrays[f"{name}.var"],
            eps=_BN_EPS,
            momentum=self.bn_momentum,
            fix_gamma=True,
            use_global_stats=False,
        )  # fmt: skip; updates the moving statistics in place


def _csr(rows: Any) -> sp.csr_matrix:
    if sp.issparse(rows):
        return rows
    data, indices, indptr, shape = rows
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def _as_list(state: Any) -> list[Any]:
    return list(state) if isinstance(state, (tuple, list)) else [state]
