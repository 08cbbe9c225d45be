"""The Factorization Machine step: one mini-batch on the rows in use, numpy or MXNet.

The model (Rendle 2010) for a row ``x`` with ``d`` features::

    score(x) = w0 + sum_i w_i x_i + 1/2 * sum_f [ (sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2 ]

computed in O(nnz * k). A mini-batch touches only the ``u`` distinct columns among its
non-zeros, so the step works on *compact* arrays: the CSR batch is re-indexed to those
``u`` columns (``local``), their records are gathered from the host table, the loss and
its gradient are computed, the optimizer (:func:`engine.apply_update`, shared) updates the
compact parameters and state, and the records are scattered back. Nothing of size ``d``
is touched per step, so a 2^20-column hashed space costs what its non-zeros cost.

Two trainers take the same steps (the tests compare them step by step):

* :class:`NumpyFMTrainer`, the CPU's: the gradient written out, per non-zero
  ``d loss/d score * x_rc * [1, xV_r - x_rc v_c]`` summed per column. MXNet's imperative
  calls cost ~40-50 us each from Python and its autograd step makes ~50 of them plus two
  CSR arrays: 5.2 ms for a 100-row step, where this one takes 0.26 ms (BENCHMARKS.md).
* :class:`FMTrainer`, a GPU's: MXNet's autograd (row-sparse gradients of a CSR x dense
  product, MXNet's native sparse path) on the device.

Losses (summed over the rows; the optimizer rescales by ``1 / rows`` unless
``rescale_grad`` says otherwise): binary classifier, the logistic loss on labels 0/1
(SageMaker's ``binary_classification_cross_entropy``); regressor, ``1/2 (score - y)^2``.
Weight decay is per row that uses a feature (:meth:`_Settings.decay`).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import scipy.sparse as sp

from beam_ml.core.sparse import csr_times, csr_transpose_times
from beam_ml.nn import engine

__all__ = ["FMTrainer", "NumpyFMTrainer", "fm_trainer", "fm_scores"]


def fm_scores(
    features: Any, bias: float, linear: np.ndarray, factors: np.ndarray, sq_norms: np.ndarray
) -> np.ndarray:
    """Scores of rows with numpy/scipy only (prediction needs no MXNet).

    ``features`` is CSR or dense (rows, d); ``sq_norms`` is ``(factors ** 2).sum(1)``,
    precomputed once per model. Returns float64 of shape (rows,).
    """
    xv = np.asarray(features @ factors, dtype=np.float64)  # (rows, k)
    if sp.issparse(features):
        squared = features.multiply(features)
    else:
        squared = np.square(features)
    x2v2 = np.asarray(squared @ sq_norms, dtype=np.float64).ravel()  # (rows,)
    lin = np.asarray(features @ linear, dtype=np.float64).ravel()  # (rows,)
    return bias + lin + 0.5 * (np.einsum("ij,ij->i", xv, xv) - x2v2)


class _Settings:
    """What both trainers share: per-column rates and decays, the column scratch array."""

    def __init__(
        self,
        n_features: int,
        num_factors: int,
        classifier: bool,
        spec: engine.OptimizerSpec,
        bias_lr: float,
        bias_wd: float,
        linear_lr: float,
        linear_wd: float,
        factors_lr: float,
        factors_wd: float,
    ):
        self.k = num_factors
        self.classifier = classifier
        self.spec = spec
        self.bias_lr, self.bias_wd = bias_lr, bias_wd
        width = 1 + num_factors
        self.lr_row = np.full((1, width), factors_lr, dtype=np.float32)
        self.wd_row = np.full((1, width), factors_wd, dtype=np.float32)
        self.lr_row[0, 0], self.wd_row[0, 0] = linear_lr, linear_wd
        self.scratch = np.empty(n_features, dtype=np.int32 if n_features < 2**31 else np.int64)

    def decay(self, touches: np.ndarray, rows: int) -> np.ndarray:
        """Weight decay per column record, (u, 1 + k): ``wd`` once per row that uses the
        feature, in the gradient's scale (``apply_update`` adds it after rescaling)."""
        scale = self.spec.rescale_grad if self.spec.rescale_grad is not None else 1.0 / rows
        return self.wd_row * (touches * scale).astype(np.float32)[:, None]

    def columns(self, features: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batch's distinct columns, each non-zero's local column, touches per column."""
        columns, local = engine.unique_inverse(features.indices, self.scratch)
        return columns, local, np.bincount(local, minlength=columns.shape[0])


def fm_trainer(device: str, *settings: Any) -> Any:
    """The trainer for ``device``: numpy on the CPU, MXNet on a GPU (see the module notes)."""
    if device == "cpu":
        return NumpyFMTrainer(*settings)
    return FMTrainer(device, *settings)


class NumpyFMTrainer(_Settings):
    """FM mini-batch steps on the CPU with numpy: the gradient written out (module notes).

    Takes the same steps as :class:`FMTrainer` (the tests check it against MXNet's
    autograd), at a fraction of the per-step cost.
    """

    def step(
        self,
        table: engine.ParameterTable,
        bias: engine.ParameterTable,
        features: sp.csr_matrix,
        labels: np.ndarray,
        step: int,
        write_back: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One SGD step on a mini-batch; the same contract as :meth:`FMTrainer.step`."""
        rows, width, slots = features.shape[0], table.width, table.slots
        data, indptr = features.data, features.indptr
        columns, local, touches = self.columns(features)
        local = local.astype(indptr.dtype, copy=False)  # the kernels take one index type
        u = columns.shape[0]
        records = table.gather(columns)  # (u, (1 + slots) * width)
        theta = np.ascontiguousarray(records[:, :width])  # (u, 1 + k): linear weight, factors
        bias_record = bias.values[0]  # ((1 + slots),)
        # x (rows, u) and its square elementwise, as CSR arrays over the batch's columns.
        x = (data, local, indptr)
        x_sq = (data * data, local, indptr)
        xt = csr_times(*x, u, theta)  # (rows, 1 + k): linear term, then x V
        xv = xt[:, 1:]  # (rows, k)
        v_sq = np.einsum("ij,ij->i", theta[:, 1:], theta[:, 1:])  # (u,)
        x2v2 = csr_times(*x_sq, u, v_sq)  # (rows,)
        scores = bias_record[0] + xt[:, 0] + 0.5 * (np.einsum("ij,ij->i", xv, xv) - x2v2)
        # d loss / d score: logistic loss on 0/1 labels, or 1/2 (score - y)^2
        d_score = (_sigmoid32(scores) if self.classifier else scores) - labels  # (rows,)
        # d/dw_c = sum_r x_rc d_r; d/dv_c of 1/2 (|x V|^2 - sum x^2 |v|^2) summed over the
        # rows = sum_r x_rc d_r xV_r - v_c sum_r x_rc^2 d_r: two products with x^T.
        per_row = np.empty_like(xt)  # (rows, 1 + k): [d, d * xV]
        per_row[:, 0] = d_score
        np.multiply(xv, d_score[:, None], out=per_row[:, 1:])
        grad = csr_transpose_times(*x, u, per_row)  # (u, 1 + k)
        grad[:, 1:] -= theta[:, 1:] * csr_transpose_times(*x_sq, u, d_score)[:, None]
        engine.apply_update(
            _NUMPY,
            theta,
            _slots(records, width, slots),
            grad,
            self.lr_row,
            self.decay(touches, rows),
            step,
            rows,
            self.spec,
        )  # fmt: skip; in place: theta, and the slots inside records
        records[:, :width] = theta
        w0, bias_state = engine.apply_update(
            _SCALAR,
            float(bias_record[0]),
            [float(v) for v in bias_record[1:]],
            float(d_score.sum()),
            self.bias_lr,
            self.bias_wd,
            step,
            rows,
            self.spec,
        )  # fmt: skip; one number: Python floats cost less than numpy calls
        trained_bias = np.array([[w0, *bias_state]], dtype=np.float32)  # (1, 1 + slots)
        if write_back:
            table.scatter(columns, records, touches)
            bias.values[0], bias.counts[0] = trained_bias[0], bias.counts[0] + rows
        return columns, records, trained_bias, scores


class FMTrainer(_Settings):
    """Runs FM mini-batch steps on one MXNet device (autograd). Not part of the state.

    Parameters
    ----------
    device : str
        'cpu', 'gpu' or 'gpu:N'.
    n_features, num_factors : int
    classifier : bool
        Logistic loss on 0/1 labels (True) or squared loss (False).
    spec : OptimizerSpec
    bias_lr, bias_wd : float
    linear_lr, linear_wd, factors_lr, factors_wd : float
        Column 0 of a feature record is the linear weight, columns 1..k the factors.
    """

    def __init__(self, device: str, *settings: Any):
        super().__init__(*settings)
        self.mx = engine.mxnet()
        self.nd = self.mx.nd
        self.ctx = engine.context(device)  # raises DeviceUnavailableError before any data
        self.lr = self.nd.array(self.lr_row, ctx=self.ctx)  # (1, 1 + k)

    def step(
        self,
        table: engine.ParameterTable,
        bias: engine.ParameterTable,
        features: sp.csr_matrix,
        labels: np.ndarray,
        step: int,
        write_back: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One SGD step on a mini-batch.

        Returns ``(columns, records, bias_record, scores)``: the distinct feature columns
        of the batch, their trained records (columns, (1 + slots) * (1 + k)), the trained
        bias record (1, 1 + slots) and the scores of the rows *before* the step (for
        progressive validation).

        With ``write_back`` the trained records go back into ``table`` and ``bias``
        (training); without, both stay unchanged and the caller uses the returned records
        (a model derived from pending rows, which must not change the state).
        """
        nd, ctx, mx = self.nd, self.ctx, self.mx
        rows = features.shape[0]
        columns, local, touches = self.columns(features)
        width, slots = table.width, table.slots
        # Rows without any non-zero train the bias only; MXNet has no empty arrays, so such
        # a batch carries one stand-in column that it neither uses nor writes back.
        stand_in = columns.shape[0] == 0
        records = table.gather(columns if not stand_in else np.zeros(1, dtype=np.int64))
        bias_record = bias.values[0]  # ((1 + slots),)

        shape = (rows, records.shape[0])  # records: (u, (1 + slots) * width) on the host
        indptr = features.indptr.astype(np.int64)
        x = nd.sparse.csr_matrix((features.data, local, indptr), shape=shape, ctx=ctx)
        x_sq = nd.sparse.csr_matrix((features.data**2, local, indptr), shape=shape, ctx=ctx)
        y = nd.array(labels, ctx=ctx)  # (rows,)
        theta = nd.array(records[:, :width], ctx=ctx)  # (u, 1 + k): linear weight, factors
        w0 = nd.array(bias_record[:1], ctx=ctx)  # (1,)
        # Row-sparse gradients keep the backward of CSR x dense on MXNet's sparse kernels
        # (a dense gradient would densify the (rows, u) batch).
        theta.attach_grad(stype="row_sparse")
        w0.attach_grad()
        with mx.autograd.record():
            scores = self._scores(x, x_sq, theta, w0)  # (rows,)
            loss = self._loss(scores, y)  # (rows,)
        loss.backward()
        grad = theta.grad.tostype("default")  # (u, 1 + k): every row of theta is in use

        state = [
            nd.array(records[:, i * width : (i + 1) * width], ctx=ctx) for i in range(1, 1 + slots)
        ]
        wd = nd.array(self.decay(touches, rows), ctx=ctx) if not stand_in else 0.0
        theta, state = engine.apply_update(
            nd, theta, state, grad, self.lr, wd, step, rows, self.spec
        )
        bias_state = [nd.array(bias_record[i : i + 1], ctx=ctx) for i in range(1, 1 + slots)]
        w0, bias_state = engine.apply_update(
            nd, w0, bias_state, w0.grad, self.bias_lr, self.bias_wd, step, rows, self.spec
        )
        trained = nd.concat(theta, *state, dim=1).asnumpy() if slots else theta.asnumpy()
        trained_bias = nd.concat(w0, *bias_state, dim=0).asnumpy()[None, :]  # (1, 1 + slots)
        if stand_in:
            trained = trained[:0]
        if write_back:
            table.scatter(columns, trained, touches)
            bias.scatter(np.zeros(1, dtype=np.int64), trained_bias, np.array([rows]))
        return columns, trained, trained_bias, scores.asnumpy()

    def _scores(self, x: Any, x_sq: Any, theta: Any, w0: Any) -> Any:
        nd = self.nd
        xt = nd.sparse.dot(x, theta)  # (rows, 1 + k): linear term, then x V
        linear = nd.slice_axis(xt, axis=1, begin=0, end=1)  # (rows, 1)
        xv = nd.slice_axis(xt, axis=1, begin=1, end=None)  # (rows, k)
        v = nd.slice_axis(theta, axis=1, begin=1, end=None)  # (u, k)
        x2v2 = nd.sparse.dot(x_sq, nd.sum(v * v, axis=1, keepdims=True))  # (rows, 1)
        pairwise = 0.5 * (nd.sum(xv * xv, axis=1, keepdims=True) - x2v2)  # (rows, 1)
        return nd.broadcast_add(linear + pairwise, w0.reshape((1, 1))).reshape((-1,))

    def _loss(self, scores: Any, y: Any) -> Any:
        nd = self.nd
        if self.classifier:
            # log(1 + e^s) - y s, written to stay finite for any s
            return nd.relu(scores) - scores * y + nd.log1p(nd.exp(-nd.abs(scores)))
        return 0.5 * nd.square(scores - y)


# --- numpy helpers of the CPU step ---------------------------------------------------------------
class _NUMPY:
    """The three array functions :func:`engine.apply_update` calls, for numpy arrays."""

    clip = staticmethod(np.clip)
    sqrt = staticmethod(np.sqrt)
    broadcast_mul = staticmethod(np.multiply)


class _SCALAR:
    """The same three functions for Python floats (the bias)."""

    clip = staticmethod(lambda x, low, high: min(max(x, low), high))
    sqrt = staticmethod(math.sqrt)
    broadcast_mul = staticmethod(operator.mul)


def _slots(records: np.ndarray, width: int, slots: int) -> list[np.ndarray]:
    return [records[:, i * width : (i + 1) * width] for i in range(1, 1 + slots)]


def _sigmoid32(z: np.ndarray) -> np.ndarray:
    return np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * z))
