"""Hyperparameter tuning from pause and resume: successive halving, and derive grids.

``beam-ml tune ALGO --grid 'learning_rate=1e-3,1e-2;num_factors=16,64'`` (issue 21):

- **Training parameters** (the config's): successive halving. Every configuration of the
  grid trains on a first slice of the input and is checkpointed; the best ``1/eta`` by a
  validation metric resume (``--resume`` semantics: the checkpointed state plus the next
  slice of rows, :func:`~beam_ml.transforms.train.train_cycle`) on the following slice,
  so survivor ``i`` has seen ``budget / eta**(rungs - 1 - i)`` rows after rung ``i``, and
  the last one the whole budget. One pipeline per rung reads the slice once for all the
  configurations it trains. ``eta=1`` trains every configuration on the whole budget:
  the baseline tuning is measured against.
- **Model parameters** (``derive``'s: PCA's ``num_components``, k-means' ``k``, the
  linear learner's ``wd``/``l1`` on its exact path and its binary threshold criteria):
  no retraining. One state is trained (with the largest ``k``/``num_components`` of the
  grid), then every point of the grid is derived from it and scored on the validation
  rows: one pass, many models. A grid mixing both kinds derives every model point from
  each trained candidate and ranks the candidate by its best.

The training and validation rows are read into memory (blocks), so a tuning run fits
data that fits one machine; the training itself runs as Beam pipelines.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from beam_ml.core.errors import NotEnoughDataError
from beam_ml.core.state import TrainingState, config_to_dict

__all__ = [
    "Candidate",
    "TuningResult",
    "parse_grid",
    "default_metric",
    "higher_is_better",
    "successive_halving_schedule",
    "tune",
]

_LOG = logging.getLogger("beam_ml.tuning")

# Derive parameters bounded by a config field of the same name: the state is trained
# with the grid's largest value, and every smaller one is derived from it.
_CAPACITY = {"pca": ("num_components",), "kmeans": ("k",)}
# The linear learner derives these on its exact path only (squared loss, d <= 8192);
# for other losses they are training parameters of the packed models.
_EXACT_PATH = ("wd", "l1", "normalize_data", "normalize_label")
# Metrics where a larger value is better; every other metric is an error or a loss.
_HIGHER = {
    "r2",
    "binary_classification_accuracy",
    "precision",
    "recall",
    "binary_f_beta",
    "roc_auc_score",
    "multiclass_accuracy",
    "multiclass_top_k_accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f_beta",
    "explained_variance_ratio",
    "npmi",
    "npmi_unseen_minus_1",
    "coverage",
}
_DEFAULT_METRIC = {"pca": "reconstruction_mse", "kmeans": "msd"}


def higher_is_better(metric: str) -> bool:
    return metric in _HIGHER


def default_metric(model: Any) -> str:
    """What tuning ranks ``model``'s family by unless told: an error or a loss (RMSE,
    cross-entropy, perplexity...; for classifiers the cross-entropy, smoother than the
    accuracy on small slices), reconstruction error for PCA, mean squared distance for
    k-means."""
    from beam_ml.testing import agreement_metric

    metric = _DEFAULT_METRIC.get(model.FAMILY) or agreement_metric(model)
    return "binary_classification_cross_entropy" if metric.endswith("_accuracy") else metric


def parse_grid(text: str, converters: dict[str, Callable[[str], Any]]) -> dict[str, list[Any]]:
    """``'learning_rate=1e-3,1e-2;num_factors=16,64'`` -> ``{name: [values]}``, each value
    converted by ``converters[name]`` (a name it lacks is not a parameter)."""
    grid: dict[str, list[Any]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, values = part.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise ValueError(f"--grid: {part!r} is not NAME=VALUE[,VALUE...]")
        if name not in converters:
            known = ", ".join(sorted(converters))
            raise ValueError(
                f"--grid: {name!r} is not a parameter of this algorithm (one of: {known})"
            )
        if name in grid:
            raise ValueError(f"--grid: {name!r} is given twice")
        try:
            grid[name] = [converters[name](v.strip()) for v in values.split(",") if v.strip()]
        except (ValueError, TypeError) as exc:
            raise ValueError(f"--grid: a value of {name!r} is invalid: {exc}") from None
        if len(set(map(repr, grid[name]))) != len(grid[name]):
            raise ValueError(f"--grid: {name!r} repeats a value")
    if not grid:
        raise ValueError("--grid is empty; give NAME=VALUE,VALUE;NAME=VALUE,...")
    return grid


def _points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def successive_halving_schedule(n: int, budget: int, eta: int) -> list[tuple[int, int]]:
    """``(configurations, rows seen by each after the rung)`` per rung: ``n`` configurations
    start, ``1/eta`` of them go on to each next rung, each rung multiplies the rows by
    ``eta``, and the last rung reaches ``budget``. ``eta=1``: one rung, the whole budget."""
    if n < 1 or budget < 1 or eta < 1:
        raise ValueError(
            f"successive halving needs n, budget and eta >= 1; got {n}, {budget}, {eta}"
        )
    if eta == 1 or n == 1:
        return [(n, budget)]
    rungs = math.floor(math.log(n, eta) + 1e-9) + 1  # the last keeps one (or < eta)
    schedule = []
    for i in range(rungs):
        alive = max(1, n // eta**i)
        rows = max(1, round(budget / eta ** (rungs - 1 - i)))
        schedule.append((alive, rows))
    if any(b[1] <= a[1] for a, b in zip(schedule, schedule[1:], strict=False)):
        raise ValueError(
            f"a budget of {budget} rows is too small for {rungs} rungs of successive "
            f"halving (each {eta} times the rows of the last); give a larger --budget"
        )
    return schedule


@dataclass
class Candidate:
    """One training configuration, its checkpoint and its best model so far."""

    index: int
    params: dict[str, Any]  # the training parameters of the grid point
    config: Any
    checkpoint: str | None = None
    rows: int = 0  # rows of the input it has learnt (each epoch over them counts once)
    rung: int = -1  # the last rung it was trained in
    derive_params: dict[str, Any] = field(default_factory=dict)  # its best model's
    score: float | None = None
    models: list[dict[str, Any]] = field(default_factory=list)  # every derived model's score


@dataclass
class TuningResult:
    family: str
    metric: str
    strategy: str  # 'successive_halving', 'train_all' or 'derive_grid'
    leaderboard: list[dict[str, Any]]
    best: dict[str, Any]
    rows_processed: int  # rows fed to training, summed over configurations, rungs and epochs
    rows_full_grid: int  # what training every grid point on the whole budget feeds
    model_path: str
    schedule: list[tuple[int, int]]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _split_grid(
    cls: type, grid: dict[str, list[Any]], base: dict[str, Any], first_block: Any, retrain: bool
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """(training parameters, model parameters) of the grid."""
    derive = set(inspect.signature(cls.derive).parameters) - {"self"}
    config_fields = {f.name for f in dataclasses.fields(cls.CONFIG)}
    if retrain:  # the baseline: what the config also takes is trained, not derived
        derive -= config_fields
    if cls.FAMILY == "linear_learner" and set(grid) & set(_EXACT_PATH):
        probe = cls.empty(cls.CONFIG(**base)).update(first_block.slice(0, 1))
        if not probe.has_exact:  # the packed models train these: training parameters
            derive -= set(_EXACT_PATH)
    model = {k: v for k, v in grid.items() if k in derive}
    training = {k: v for k, v in grid.items() if k not in derive}
    unknown = set(training) - config_fields
    if unknown:
        raise ValueError(f"--grid: {sorted(unknown)} are neither training nor model parameters")
    return training, model


def _capacity(cls: type, model_grid: dict[str, list[Any]]) -> dict[str, Any]:
    """The config values a derive grid needs: the largest k / num_components asked."""
    return {n: max(model_grid[n]) for n in _CAPACITY.get(cls.FAMILY, ()) if n in model_grid}


def _slices(data: Any, start: int, stop: int, block_rows: int) -> list[Any]:
    """Rows ``[start, stop)`` of the in-memory training data as blocks of ``block_rows``."""
    return [data.slice(a, min(a + block_rows, stop)) for a in range(start, stop, block_rows)]


def _train_rung(
    candidates: Sequence[Candidate],
    blocks: list[Any],
    outputs: dict[int, str],
    pipeline_args: list[str],
) -> None:
    """One pipeline: the rung's rows (read once) train every candidate on from its
    checkpoint, as ``beam-ml train --resume``, each into its rung's checkpoint."""
    import apache_beam as beam

    from beam_ml.core.runner import pipeline_options
    from beam_ml.transforms.train import train_cycle

    class _TrainOne(beam.PTransform):
        def __init__(self, candidate: Candidate, output: str):
            super().__init__()
            self.candidate, self.output = candidate, output

        def expand(self, rows: Any) -> Any:
            extra = {"tuning": {"params": self.candidate.params}, "derive_defaults": {}}
            return train_cycle(
                rows,
                self.candidate.config,
                self.output,
                extra,
                resume_from=self.candidate.checkpoint,
            )

    with beam.Pipeline(options=pipeline_options(pipeline_args)) as p:
        rows = p | "Rows" >> beam.Create(blocks, reshuffle=False)
        for c in candidates:
            _ = rows | f"Candidate{c.index:03d}" >> _TrainOne(c, outputs[c.index])
    for c in candidates:
        c.checkpoint = outputs[c.index]


def _score(
    candidate: Candidate,
    model_points: list[dict[str, Any]],
    derive_defaults: dict[str, Any],
    validation: Any,
    metric: str | None,
) -> str:
    """Derive every model point from the candidate's state and score it on the
    validation rows; keep its best. Returns the metric used."""
    from beam_ml.io.checkpoints import read_checkpoint

    state, _ = read_checkpoint(candidate.checkpoint, "state")
    candidate.models = []
    best = None
    for point in model_points:
        params = {**derive_defaults, **point}
        try:
            model = state.derive(**params)
        except NotEnoughDataError as exc:  # e.g. a k larger than a first slice's summary
            _LOG.warning("tune: no model for %s after %d rows: %s", point, state.n_seen, exc)
            candidate.models.append({"derive_params": point, "error": str(exc)})
            continue
        metric = metric or default_metric(model)
        value = float(model.score(metric, validation))
        candidate.models.append({"derive_params": point, metric: _finite(value)})
        if best is None or _better(value, best[0], metric):
            best = (value, point)
    if best is None:
        raise NotEnoughDataError(
            f"tune: no model could be derived from candidate {candidate.params} after "
            f"{state.n_seen} rows; give a larger --budget or a smaller grid"
        )
    candidate.score, candidate.derive_params = best
    return metric


def _finite(value: float | None) -> float | None:
    """None for NaN or infinity (a diverged model): JSON has neither."""
    return value if value is not None and math.isfinite(value) else None


def _better(a: float, b: float, metric: str) -> bool:
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if higher_is_better(metric) else a < b


def _ranked(candidates: Sequence[Candidate], metric: str) -> list[Candidate]:
    """Furthest rung first, then by score (NaN last)."""
    sign = -1.0 if higher_is_better(metric) else 1.0

    def key(c: Candidate) -> tuple:
        value = c.score if c.score is not None and not math.isnan(c.score) else math.inf
        return (-c.rung, math.isinf(value), sign * value if not math.isinf(value) else 0.0)

    return sorted(candidates, key=key)


def tune(
    state_class: type[TrainingState],
    base: dict[str, Any],
    grid: dict[str, list[Any]],
    data: Any,
    validation: Any,
    output: str,
    *,
    metric: str | None = None,
    budget: int | None = None,
    eta: int = 3,
    derive_defaults: dict[str, Any] | None = None,
    block_rows: int = 10_000,
    pipeline_args: list[str] | None = None,
    retrain: bool = False,
) -> TuningResult:
    """Tune ``state_class`` over ``grid`` (``{name: [values]}``) on ``data`` (a Block of
    training rows, in the order they are learnt), ranked by ``metric`` on ``validation``.

    ``base`` holds the fixed config fields; ``budget`` the rows the chosen configuration
    learns (default: all of ``data``). ``retrain``: grid parameters that the config
    takes too (``wd``, ``k``...) are trained, one configuration each, instead of derived
    from one state: the baseline a derive grid is measured against. Writes each
    candidate's checkpoints under ``<output>/candidates/``, the chosen model to
    ``<output>/model`` and the leaderboard to ``<output>/leaderboard.json`` (``output``:
    a local folder or a gs:// or s3:// prefix).
    """
    from apache_beam.io.filesystems import FileSystems

    from beam_ml.io.checkpoints import read_checkpoint, write_checkpoint

    derive_defaults = dict(derive_defaults or {})
    budget = data.n_rows if budget is None else int(budget)
    if not 1 <= budget <= data.n_rows:
        raise ValueError(f"--budget must be 1 to the {data.n_rows} rows of --input; got {budget}")
    training_grid, model_grid = _split_grid(state_class, grid, base, data, retrain)
    model_points = _points(model_grid) if model_grid else [{}]
    capacity = _capacity(state_class, model_grid)
    training_points = _points(training_grid) if training_grid else [{}]
    candidates = []
    for i, point in enumerate(training_points):
        config = state_class.CONFIG(**{**base, **capacity, **point})
        candidates.append(Candidate(i, point, config))
    schedule = successive_halving_schedule(len(candidates), budget, eta)
    if not training_grid:
        strategy = "derive_grid"
    else:
        strategy = "train_all" if len(schedule) == 1 else "successive_halving"
    epochs = {c.index: state_class.PLAN.epochs_of(c.config) for c in candidates}

    alive, seen, rows_processed = candidates, 0, 0
    for rung, (keep, rows) in enumerate(schedule):
        alive = alive[:keep]
        _LOG.info(
            "tune %s: rung %d of %d: %d configuration(s), rows %d to %d",
            *(state_class.FAMILY, rung + 1, len(schedule), len(alive), seen, rows),
        )
        outputs = {
            c.index: _join(output, "candidates", f"c{c.index:03d}", f"rows-{rows:010d}")
            for c in alive
        }
        _train_rung(alive, _slices(data, seen, rows, block_rows), outputs, pipeline_args or [])
        rows_processed += sum(epochs[c.index] for c in alive) * (rows - seen)
        for c in alive:
            c.rung, c.rows = rung, rows
            metric = _score(c, model_points, derive_defaults, validation, metric)
        alive = _ranked(alive, metric)
        seen = rows
    ranked = _ranked(candidates, metric)
    winner = ranked[0]
    state, _ = read_checkpoint(winner.checkpoint, "state")
    chosen = {**derive_defaults, **winner.derive_params}
    model = state.derive(**chosen)
    model_path = _join(output, "model")
    board = [_entry(rank, c, metric) for rank, c in enumerate(ranked, 1)]
    write_checkpoint(
        model_path,
        model,
        {"derived_from": winner.checkpoint, "params": chosen, "tuning": board[0]},
    )
    result = TuningResult(
        family=state_class.FAMILY,
        metric=metric,
        strategy=strategy,
        leaderboard=board,
        best=board[0],
        rows_processed=rows_processed,
        rows_full_grid=sum(epochs.values()) * len(model_points) * budget,
        model_path=model_path,
        schedule=schedule,
    )
    text = json.dumps(result.to_json(), indent=2, default=float, allow_nan=False)
    with FileSystems.create(_join(output, "leaderboard.json")) as handle:
        handle.write(text.encode())
    return result


def _join(*parts: str) -> str:
    """A path under ``output``, local or on an object store (gs://, s3://)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(parts[0].rstrip("/"), *parts[1:])


def _entry(rank: int, c: Candidate, metric: str) -> dict[str, Any]:
    return {
        "rank": rank,
        "params": {**c.params, **c.derive_params},
        "training_params": c.params,
        "derive_params": c.derive_params,
        "rows": c.rows,
        "rung": c.rung,
        metric: _finite(c.score),
        "models": c.models,
        "checkpoint": c.checkpoint,
        "config": config_to_dict(c.config),
    }


def leaderboard_table(result: TuningResult, limit: int = 20) -> str:
    """The leaderboard as a text table (for standard error)."""
    names = list(dict.fromkeys(n for e in result.leaderboard for n in e["params"]))
    header = ["rank", *names, "rows", result.metric]
    lines = [header]
    for entry in result.leaderboard[:limit]:
        score = entry[result.metric]
        lines.append(
            [
                str(entry["rank"]),
                *(str(entry["params"].get(n, "")) for n in names),
                str(entry["rows"]),
                "nan" if score is None else f"{score:.6g}",
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in lines]
    if len(result.leaderboard) > limit:
        text.append(f"... {len(result.leaderboard) - limit} more in leaderboard.json")
    return "\n".join(text)
