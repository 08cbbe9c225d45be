"""The Factorization Machine network on MXNet: one mini-batch step on the rows in use.

The model (Rendle 2010) for a row ``x`` with ``d`` features::

    score(x) = w0 + sum_i w_i x_i + 1/2 * sum_f [ (sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2 ]

computed in O(nnz * k). A mini-batch touches only the ``u`` distinct columns among its
non-zeros, so the step works on *compact* arrays: the CSR batch is re-indexed to those
``u`` columns (``local``), their records are gathered from the host table, the loss and
its gradient are computed on the device with autograd (row-sparse gradients of a
CSR x dense product, MXNet's native sparse path), the optimizer updates the compact
parameters and state, and the records are scattered back. Nothing of size ``d`` is
touched per step, so a 2^20-column hashed space costs what its non-zeros cost.

Losses (summed over the rows; the optimizer rescales by ``1 / rows`` unless
``rescale_grad`` says otherwise): binary classifier, the logistic loss on labels 0/1
(SageMaker's ``binary_classification_cross_entropy``); regressor, ``1/2 (score - y)^2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from beam_ml.nn import engine

__all__ = ["FMTrainer", "fm_scores"]


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


class FMTrainer:
    """Runs FM mini-batch steps on one device. Not part of the state: rebuilt on demand.

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

    def __init__(
        self,
        device: str,
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
        self.mx = engine.mxnet()
        self.nd = self.mx.nd
        self.ctx = engine.context(device)  # raises DeviceUnavailableError before any data
        self.k = num_factors
        self.classifier = classifier
        self.spec = spec
        self.bias_lr, self.bias_wd = bias_lr, bias_wd
        width = 1 + num_factors
        lr = np.full((1, width), factors_lr, dtype=np.float32)
        wd = np.full((1, width), factors_wd, dtype=np.float32)
        lr[0, 0], wd[0, 0] = linear_lr, linear_wd
        self.lr = self.nd.array(lr, ctx=self.ctx)  # (1, 1 + k)
        self.wd = self.nd.array(wd, ctx=self.ctx)  # (1, 1 + k)
        self.scratch = np.empty(n_features, dtype=np.int32 if n_features < 2**31 else np.int64)

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
        columns, local = engine.unique_inverse(features.indices, self.scratch)
        touches = np.bincount(local, minlength=columns.shape[0])
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
        theta, state = engine.apply_update(
            nd, theta, state, grad, self.lr, self.wd, step, rows, self.spec
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
