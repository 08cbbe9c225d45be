"""Linear Learner in one pass: packed SGD models, the exact ridge path, late thresholds.

SageMaker's linear learner trains ``num_models`` linear models side by side ("model
packing"), each with its own learning rate and regularization, and keeps the one that
does best on validation data, usually after several epochs. Here one pass keeps
everything that choice needs, so it is made *after* training, by ``derive`` (several
epochs: see "Validation rows" below):

The packed models (every loss)
    ``num_models`` models, one column each of a ``(d, num_models)`` weight matrix (times
    the number of classes for softmax), trained by SGD, Adam or RMSProp on mini-batches
    of ``mini_batch_size`` rows. One mini-batch is one matrix product for all models
    forward and one backward; there is no Python loop over models or rows. Each model
    also keeps a polynomial-decay average of its iterates (Shamir & Zhang 2013), which
    converges in one pass where the last iterate still jitters; both the last and the
    averaged iterate of every model are *candidates*. Before each step every candidate
    predicts the mini-batch it is about to learn from (progressive validation, Blum et
    al. 1999), so the state holds an honest out-of-sample loss per candidate without a
    validation set. For classifiers it also holds each candidate's histogram of scores
    for positives and negatives, from which ``derive`` picks the decision threshold for
    any ``binary_classifier_model_selection_criteria`` (accuracy, F-beta, precision at
    a target recall ...) and the candidate that is best at it.

The exact path (squared loss)
    The state keeps ``n``, the mean and the *centred* scatter matrix of ``[x, y]`` in
    float64, merged with the pairwise formula (:mod:`beam_ml.core.numerics`). Ridge for
    any ``wd`` is then one Cholesky solve, and the elastic net for any (``l1``, ``wd``)
    is coordinate descent on the Gram matrix (Friedman, Hastie & Tibshirani 2010,
    "covariance updates"), with or without standardization, all without the data.
    Above :data:`MAX_EXACT_FEATURES` features the ``(d+1, d+1)`` matrix is not kept;
    the state says so and ``derive`` uses the packed models.

The objective and the scaling of ``wd`` and ``l1``
    Every path minimizes the same per-example *mean*, as SageMaker::

        J(w, b) = (1/n) sum_i weight_i * loss(y_i, x_i . w + b) + wd/2 ||w||^2 + l1 ||w||_1

    with ``squared_loss = (y - s)^2 / 2``, and the bias never regularized. With
    ``normalize_data`` the penalties apply to the weights of the standardized features
    (``(x - mean) / std``, population std); with ``normalize_label`` (regression) the
    loss is on ``(y - mean_y) / std_y``. So scikit-learn's ``ElasticNet(alpha,
    l1_ratio)`` is ``wd = alpha * (1 - l1_ratio)``, ``l1 = alpha * l1_ratio``, and
    ``Ridge(alpha)`` (a sum, not a mean) is ``wd = alpha / n``. The packed models use
    the same scaling, so a ``wd`` means the same thing on both paths.

Normalization in one pass
    As SageMaker, the mean and standard deviation of the first ``num_point_for_scaler``
    rows fix the standardization: those rows wait in the state, then every model steps
    through them and on. Later rows do not move it, so a drifting stream (elec2's
    columns that are constant for months) cannot turn into huge standardized values.
    The default sample is 1000 rows, not SageMaker's 10000: enough for the scale of
    dense columns (a few per cent, which a preconditioner tolerates), and measured
    better in one pass on one-hot data (a9a, adult with mini-batches of 1000: 1.2% and
    3.2% lower test log loss than with 10000 rows), where a larger sample standardizes
    very rare indicator columns into values of 30-60 whose spiky gradients make one
    pass noisier (a column that does not vary in the sample is centred, not scaled). The packed models are
    kept in the *original* feature space and every step is taken in the standardized
    one (a diagonal preconditioner and an implicit centring, computed as
    ``X^T r - mean * sum(r)``, so sparse blocks stay sparse); two workers' models can be
    averaged although their scaler samples differ.

Merging
    The Gram matrix, class counts, progressive loss sums and histograms merge exactly;
    two scaler samples merge into their union (pairwise formula). The packed models
    merge by an example-weighted average of weights, averaged weights and optimizer
    moments: *approximate* (one-shot parameter averaging, as DESIGN.md §4; the tests
    bound what it costs: four a9a quarters merged are within 1% of one pass). Rows that
    do not yet fill a mini-batch wait in the state (at most ``mini_batch_size - 1``
    after the scaler's sample), so updating with one block or row by row takes the
    same steps, and the state's size never depends on the number of rows.

Epochs
    A stream is one pass. For a bounded input ``epochs > 1`` makes :class:`~beam_ml.Train`
    pass over the same blocks again inside the same pipeline (the shared driver,
    :func:`beam_ml.transforms.epochs.continue_epochs`): every bundle's replica starts from
    :meth:`LinearLearnerState.continued` of the previous pass's state (the models,
    optimizer and scaler carry on; the row count, exact statistics, progressive losses
    and histograms start afresh, so they describe one pass), and the replicas merge as
    above. Progressive losses are then no longer held out: only the first pass's are.

Validation rows, best epochs and early stopping (issue 24)
    From epoch 2 on the progressive loss is on rows every model has learnt, and ranking
    by it picks the most overfit model (click-log-like rows, 5 epochs: test log loss
    0.91 where the base rate scores 0.45; BENCHMARKS.md). So with ``epochs > 1``
    (``validation_fraction`` 'auto' = 0.1; 0 for one pass) the rows whose content hash
    (:func:`beam_ml.nn.engine.row_keys`) falls in that fraction are *validation rows*,
    as SageMaker's validation channel: the same rows in every epoch, block and worker,
    never trained on and never in the scaler's sample. The state keeps a bounded uniform
    sample of them (the 10,000 of smallest hash, fewer above 800 features) with how
    often each occurred, which merges exactly (:class:`ValidationRows`); set-aside
    rows it cannot keep train. At the end of every epoch (:meth:`continued`) every
    candidate is scored on all of them, exactly, and each keeps the parameters of its
    epoch with the lowest validation loss (a copy of its weights and bias: the state
    grows by the size of the packed models, never with the rows). ``derive`` then
    ranks the candidates' current parameters and their best epochs' on the validation
    rows, and chooses thresholds from the histograms of their scores there; so its pick
    never has a higher validation loss than the epoch-1 pick (on independent test
    rows: within noise, as the tests measure). When the best validation loss over all
    candidates has not improved by more than ``early_stopping_tolerance`` (relative)
    for ``early_stopping_patience`` epochs, the remaining configured epochs leave the
    models as they are (rows are counted, nothing trains; the log and
    :meth:`epoch_report` say so); the best over all candidates, not any candidate,
    because the smallest learning rates improve a little every epoch and would never
    stop. Training resumed on new rows past the configured ``epochs`` trains again.
    Without validation rows (``validation_fraction=0``) later epochs are ranked on each
    candidate's epoch-1 progressive loss, the only honest one, which cannot see them
    overfit. Per-epoch metrics (rows, rows trained, progressive and validation losses,
    early stopping) are kept in the state: :meth:`epoch_report`, ``describe()``, and
    the ``epoch_metrics`` field of a checkpoint's manifest (``beam-ml inspect``).

Modules
    ``config`` (what must match to merge), ``losses`` (labels and per-row losses),
    ``exact`` (the squared-loss solve from the moments of ``[x, y]``), ``packed`` (the
    packed models as a network, :class:`~beam_ml.algorithms.linear_learner.packed.PackedNetwork`:
    parameters, step, predictor), ``validation`` (the validation rows), ``epochs`` (best
    epochs, early stopping, ``continued``), ``selection`` (``derive``), ``state`` (the
    state: rows in, mini-batches to the network, merging, the payload) and ``model`` (the
    derived model). The state's moments are :class:`beam_ml.core.moments.Moments`; its
    training skeleton is :class:`beam_ml.nn.skeleton.GradientState`.

References
----------
Blum, Kalai & Langford, "Beating the hold-out", COLT 1999. Shamir & Zhang, "Stochastic
gradient descent for non-smooth optimization", ICML 2013. Friedman, Hastie & Tibshirani,
"Regularization paths for generalized linear models via coordinate descent", JSS 2010.
Liberty et al., "Elastic machine learning algorithms in Amazon SageMaker", SIGMOD 2020.
"""

from beam_ml.algorithms.linear_learner.config import LinearLearnerConfig
from beam_ml.algorithms.linear_learner.exact import MAX_EXACT_FEATURES
from beam_ml.algorithms.linear_learner.model import LinearLearnerModel
from beam_ml.algorithms.linear_learner.state import LinearLearnerState

__all__ = ["LinearLearnerConfig", "LinearLearnerState", "LinearLearnerModel", "MAX_EXACT_FEATURES"]
