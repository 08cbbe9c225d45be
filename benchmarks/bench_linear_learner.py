"""Linear Learner benchmark: beam_ml end to end against scikit-learn, Vowpal Wabbit and Spark.

    python benchmarks/bench_linear_learner.py [--rows 1000000] [--dim 64] [--models 32]
        [--mini-batch 1000] [--sparse] [--no-peers] [--repeat 3]
    python benchmarks/bench_linear_learner.py --clicks [--rows 10000] [--epochs 5]

``--clicks`` (issue 24) measures model selection after several epochs instead: on
click-log-like rows (hashed sparse categoricals that 5 epochs overfit), the test log loss
of the model ``derive`` picks, before (ranked on the last epoch's progressive loss) and
after (ranked on validation rows), against the base rate and scikit-learn.

Generates (once, cached in benchmarks/data/) a logistic-regression problem: N x D float32
Gaussian features (``--sparse``: a9a-style rows of 14 one-hot categorical groups, 123
binary columns) with 0/1 labels drawn from a known linear model, a 200,000-row test set
from the same model, and the same rows in each tool's native format: ``.npy`` (label last)
or LIBSVM for beam_ml, Vowpal Wabbit text, Parquet (dense) or LIBSVM (sparse) for Spark.
Then times, in one run:

- np.load (dense) or the LIBSVM file parsed by scikit-learn (sparse), and one pass of
  ``SGDClassifier(loss='log_loss').partial_fit`` over 10,000-row batches (one model);
- sparse only: beam_ml's LIBSVM parser alone (``formats.parse_libsvm`` over the file's
  10,000-row chunks, in memory: what ``ReadBlocks`` does per chunk, without Beam);
- scikit-learn ``LogisticRegression`` (lbfgs, C=1: the optimum on 1M rows) in memory;
- beam_ml end to end: ``ReadBlocks`` -> ``Train(LinearLearnerConfig(num_models=32))``
  -> ``Derive(loss_function)`` -> model checkpoint, DirectRunner, start-up included;
- Vowpal Wabbit (``vowpalwabbit`` package, one pass over its text format, logistic loss,
  defaults otherwise) and Spark MLlib ``LogisticRegression`` (local[2], load + fit), both
  in the peers' own environment, never this package's: benchmarks/.venv-peers, made with
  ``python3.11 -m venv benchmarks/.venv-peers && benchmarks/.venv-peers/bin/pip install
  pyspark numpy pandas pyarrow vowpalwabbit``. A missing peer is reported and skipped.

Every model's test log loss is computed here on the same held-out rows. The fast steps
are the best of ``--repeat`` runs (the machine is shared and noisy); VW, Spark and
LogisticRegression run once. Prints a table, the ratios of issue 4's targets, and a JSON
line for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import scipy.sparse as sp

import beam_ml

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PEERS = HERE / ".venv-peers" / "bin" / "python"
BLOCK = 10_000
TEST_ROWS = 200_000
REPEAT = 3
# a9a's layout: 14 categorical groups (the continuous columns binarized), 123 columns.
GROUPS = [5, 8, 16, 7, 14, 6, 5, 2, 2, 3, 3, 8, 3, 41]


# --- data ---------------------------------------------------------------------------------
def _dense(rng: np.random.Generator, rows: int, dim: int, w: np.ndarray):
    x = rng.normal(size=(rows, dim)).astype(np.float32)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(x @ w + 0.5)))).astype(np.float32)
    return x, y


def _sparse(rng: np.random.Generator, rows: int, w: np.ndarray):
    offsets = np.cumsum([0, *GROUPS[:-1]])
    # Skewed category frequencies, as in census data: a few common values, a long tail.
    picks = [
        rng.choice(size, rows, p=np.r_[0.6 ** np.arange(size)] / (0.6 ** np.arange(size)).sum())
        for size in GROUPS
    ]
    cols = np.stack(picks, axis=1) + offsets
    x = sp.csr_matrix(
        (np.ones(cols.size, np.float32), cols.ravel(), np.arange(0, cols.size + 1, len(GROUPS))),
        shape=(rows, sum(GROUPS)),
    )
    y = (rng.random(rows) < 1 / (1 + np.exp(-(x @ w - 1.0)))).astype(np.float32)
    return x, y


def _write_vw(path: Path, x, y) -> None:
    """Vowpal Wabbit's text format: '<-1|1> |f <index>:<value> ...' per row."""
    with open(path, "w") as out:
        for start in range(0, x.shape[0], 20_000):
            part = x[start : start + 20_000]
            labels = np.where(y[start : start + 20_000] > 0, "1", "-1")
            if sp.issparse(part):
                lines = [
                    f"{lab} |f " + " ".join(f"{j}:1" for j in part.indices[a:b])
                    for lab, a, b in zip(labels, part.indptr[:-1], part.indptr[1:], strict=True)
                ]
            else:
                text = np.char.mod("%.6g", part)
                index = np.char.add(np.arange(part.shape[1]).astype(str), ":")
                lines = [
                    f"{lab} |f " + " ".join(np.char.add(index, row))
                    for lab, row in zip(labels, text, strict=True)
                ]
            out.write("\n".join(lines) + "\n")


def _write_libsvm(path: Path, x, y) -> None:
    """LIBSVM with 0/1 labels and 1-based indices (beam_ml, scikit-learn and Spark)."""
    with open(path, "w") as out:
        for start in range(0, x.shape[0], 50_000):
            part, labels = x[start : start + 50_000], y[start : start + 50_000]
            lines = [
                f"{int(lab)} " + " ".join(f"{j + 1}:1" for j in part.indices[a:b])
                for lab, a, b in zip(labels, part.indptr[:-1], part.indptr[1:], strict=True)
            ]
            out.write("\n".join(lines) + "\n")


def make_data(rows: int, dim: int, sparse: bool) -> dict[str, Path]:
    """The cached files (train and test in every format), generated once."""
    DATA.mkdir(exist_ok=True)
    stem = f"ll_{'sparse' if sparse else 'dense'}_{rows}x{sum(GROUPS) if sparse else dim}"
    paths = {
        "train": DATA / f"{stem}.{'libsvm' if sparse else 'npy'}",
        "test": DATA / f"{stem}.test.{'libsvm' if sparse else 'npy'}",
        "vw_train": DATA / f"{stem}.vw",
        "vw_test": DATA / f"{stem}.test.vw",
    }
    if not sparse:
        paths["parquet"] = DATA / f"{stem}.parquet"
    if all(p.exists() for p in paths.values()):
        return paths
    print(f"generating {stem} (once) ...", file=sys.stderr)
    rng = np.random.default_rng(0)
    if sparse:
        w = rng.normal(size=sum(GROUPS)) * 1.2
        x, y = _sparse(rng, rows, w)
        xt, yt = _sparse(rng, TEST_ROWS, w)
        _write_libsvm(paths["train"], x, y)
        _write_libsvm(paths["test"], xt, yt)
    else:
        w = rng.normal(size=dim)
        w *= 3.5 / np.linalg.norm(w)
        x, y = _dense(rng, rows, dim, w)
        xt, yt = _dense(rng, TEST_ROWS, dim, w)
        np.save(paths["train"], np.column_stack([x, y]))
        np.save(paths["test"], np.column_stack([xt, yt]))
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {f"x{i}": x[:, i] for i in range(dim)}
        pq.write_table(pa.table({**columns, "label": y.astype(np.float64)}), paths["parquet"])
    _write_vw(paths["vw_train"], x, y)
    _write_vw(paths["vw_test"], xt, yt)
    return paths


def load(path: Path, sparse: bool, dim: int):
    """The file as read by its usual reader: a CSR matrix and labels, or the .npy array."""
    if sparse:
        from sklearn.datasets import load_svmlight_file

        return load_svmlight_file(str(path), n_features=sum(GROUPS), dtype=np.float32)
    return np.load(path)


def split(loaded, sparse: bool):
    """(features, labels) with contiguous dense features (the label is the .npy's last column)."""
    if sparse:
        return loaded
    return np.ascontiguousarray(loaded[:, :-1]), loaded[:, -1].astype(np.float64)


def log_loss(probability: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def parse_chunks(data: bytes, dim: int) -> int:
    """Rows parsed by beam_ml's LIBSVM parser from the file's ~BLOCK-row chunks."""
    from beam_ml.io import formats

    step = BLOCK * (len(data) // max(1, data.count(b"\n")))
    rows, start = 0, 0
    while start < len(data):
        stop = data.find(b"\n", start + step) + 1 or len(data)
        block, _ = formats.parse_libsvm(data[start:stop], feature_dim=dim, offset=start)
        rows += block.n_rows if block is not None else 0
        start = stop
    return rows


def timed(fn, repeat: int | None = None):
    best, value = float("inf"), None
    for _ in range(repeat or REPEAT):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


# --- model selection after several epochs (issue 24) --------------------------------------------
# Click-log-like rows: 20 categorical fields of 3 to 100,000 Zipf-distributed values, one
# hashed column each in 2^14; a logistic model whose few-valued fields matter most.
CLICK_FIELDS = [4, 8, 16, 50, 100, 300, 1000, 3000, 10000, 30000]
CLICK_FIELDS += [3, 7, 25, 200, 2000, 20000, 100000, 100000, 50000, 5000]
CLICK_COLUMNS = 2**14


def click_rows(rng: np.random.Generator, rows: int, effects: list[np.ndarray]):
    """CSR float32 rows and 0/1 labels of the click-log-like model ``effects``."""
    columns, logit = [], np.full(rows, -1.5)
    for field, values in enumerate(CLICK_FIELDS):
        value = (rng.zipf(1.15, size=rows) - 1) % values
        columns.append((value * 2654435761 + field * 97531) % CLICK_COLUMNS)
        logit += effects[field][value]
    index = np.stack(columns, axis=1)
    indptr = np.arange(0, index.size + 1, len(columns))
    x = sp.csr_matrix(
        (np.ones(index.size, np.float32), index.ravel(), indptr), shape=(rows, CLICK_COLUMNS)
    )
    x.sum_duplicates()
    return x, (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float64)


def clicks(rows: int, epochs: int) -> None:
    """Which packed model ``derive`` picks after ``epochs`` epochs, on test rows.

    'before' is the selection of beam_ml before issue 24, emulated on a state trained
    without validation rows: the candidate with the lowest progressive loss of the last
    epoch (on rows every model had learnt), its current parameters.
    """
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    effects = [rng.normal(0, 0.9 if v < 100 else 0.3, size=v) for v in CLICK_FIELDS]
    x, y = click_rows(rng, rows, effects)
    test_x, test_y = click_rows(rng, 50_000, effects)
    losses = {"base_rate": log_loss(np.full(len(test_y), y.mean()), test_y)}
    for c in (1.0, 0.1):
        fitted = LogisticRegression(C=c, max_iter=5000).fit(x, y)
        losses[f"sklearn_logistic_regression_C{c}"] = log_loss(
            fitted.predict_proba(test_x)[:, 1], test_y
        )
    report: dict[str, object] = {}

    def train(validation_fraction):
        config = beam_ml.LinearLearnerConfig(
            predictor_type="binary_classifier",
            mini_batch_size=100,
            epochs=epochs,
            validation_fraction=validation_fraction,
        )
        state, first = beam_ml.LinearLearnerState(config), None
        for epoch in range(1, epochs + 1):
            state = state.continued() if epoch > 1 else state
            for start in range(0, rows, 5000):
                state.update(beam_ml.Block(x[start : start + 5000], y[start : start + 5000]))
            if epoch == 1:
                first = state.derive(binary_classifier_model_selection_criteria="loss_function")
        return state, first

    def test_loss(model) -> float:
        return log_loss(model.evaluate(test_x)[:, 0], test_y)

    old, _ = train(0.0)
    progressive = old._candidate_losses()
    chosen = int(np.argmin(progressive))
    weights, bias = old._current()
    losses["before_last_epoch_progressive_pick"] = log_loss(
        1 / (1 + np.exp(-(test_x @ weights[:, chosen] + bias[chosen]))), test_y
    )
    report["before_reported_progressive_loss"] = float(progressive[chosen])
    state, first = train("auto")
    model = state.derive(binary_classifier_model_selection_criteria="loss_function")
    losses["after_epoch_1_pick"] = test_loss(first)
    losses["after_pick"] = test_loss(model)
    report["after_pick"] = model.info
    report["epoch_report"] = state.epoch_report()
    print(f"\nLinear Learner, {rows:,} click-log-like rows x {CLICK_COLUMNS} hashed columns, "
          f"{epochs} epochs, mini_batch_size 100, 32 packed models; test log loss on 50,000 rows:")
    for name, value in losses.items():
        print(f"  {name:44s} {value:.4f}")
    print(f"  (before: reported progressive loss {report['before_reported_progressive_loss']:.4f})")
    for entry in report["epoch_report"]:
        print(f"  epoch {entry}")
    print(json.dumps({"rows": rows, "epochs": epochs, "log_loss": losses, **report}, default=float))


# --- the contenders -----------------------------------------------------------------------------
def beam_ml_end_to_end(paths: dict[str, Path], sparse: bool, dim: int, config):
    out = str(DATA / f"ll-model-{'sparse' if sparse else 'dense'}")
    if sparse:
        reader = beam_ml.ReadBlocks(
            str(paths["train"]), "libsvm", feature_dim=dim, block_size=BLOCK
        )
    else:
        reader = beam_ml.ReadBlocks(str(paths["train"]), "npy", label_column=-1, block_size=BLOCK)
    with beam.Pipeline(options=beam_ml.pipeline_options()) as p:
        _ = (
            p
            | reader
            | beam_ml.Train(config)
            | beam_ml.Derive(binary_classifier_model_selection_criteria="loss_function")
            | beam.Map(lambda m: beam_ml.write_checkpoint(out, m))
        )
    return beam_ml.read_checkpoint(out)[0]


VW_SCRIPT = r"""
import json, sys, time
import numpy as np
from vowpalwabbit import Workspace
train, test, model, preds = sys.argv[1:5]
start = time.perf_counter()
vw = Workspace(f"-d {train} --loss_function logistic -f {model} --quiet")
vw.run_parser()
vw.finish()
seconds = time.perf_counter() - start
vw = Workspace(f"-t -i {model} -d {test} -p {preds} --link logistic --quiet")
vw.run_parser()
vw.finish()
print(json.dumps({"seconds": seconds, "probability": np.loadtxt(preds).tolist()}))
"""

SPARK_SCRIPT = r"""
import json, sys, time
from pyspark.sql import SparkSession
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.classification import LogisticRegression
path, fmt, dim = sys.argv[1], sys.argv[2], int(sys.argv[3])
spark = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "8g")
         .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
         .config("spark.ui.enabled", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
start = time.perf_counter()
if fmt == "parquet":
    frame = spark.read.parquet(path)
    inputs = [c for c in frame.columns if c != "label"]
    data = VectorAssembler(inputCols=inputs, outputCol="features").transform(frame)
else:
    data = spark.read.format("libsvm").option("numFeatures", dim).load(path)
data = data.select("features", "label").cache()
n = data.count()
loaded = time.perf_counter()
model = LogisticRegression(maxIter=100, regParam=0.0).fit(data)
fitted = time.perf_counter()
print(json.dumps({"load_s": loaded - start, "fit_s": fitted - loaded, "rows": n,
                  "coef": model.coefficients.toArray().tolist(), "intercept": model.intercept}))
spark.stop()
"""


def peer(script: str, *args: str) -> dict | None:
    if not PEERS.exists():
        print(
            "peers: benchmarks/.venv-peers is missing (see the docstring); skipped", file=sys.stderr
        )
        return None
    done = subprocess.run(
        [str(PEERS), "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": str(PEERS)},
    )
    if done.returncode != 0:
        print("peer failed (skipped):\n" + done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    global REPEAT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--dim", type=int, default=64, help="dense features (ignored with --sparse)"
    )
    parser.add_argument("--models", type=int, default=32, help="beam_ml num_models")
    parser.add_argument(
        "--mini-batch", type=int, default=1000, help="beam_ml mini_batch_size (SageMaker: 1000)"
    )
    parser.add_argument("--sparse", action="store_true", help="a9a-style one-hot LIBSVM rows")
    parser.add_argument("--no-peers", action="store_true", help="skip Vowpal Wabbit and Spark")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--clicks",
        action="store_true",
        help="model selection after several epochs on click-log-like rows (issue 24); "
        "--rows (default 10,000 here) and --epochs",
    )
    parser.add_argument("--epochs", type=int, default=5, help="with --clicks")
    args = parser.parse_args()
    if args.clicks:
        return clicks(10_000 if args.rows == 1_000_000 else args.rows, args.epochs)
    REPEAT = args.repeat
    sparse, n = args.sparse, args.rows
    dim = sum(GROUPS) if sparse else args.dim
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    paths = make_data(n, dim, sparse)
    seconds: dict[str, float] = {}
    losses: dict[str, float] = {}
    test_x, test_y = split(load(paths["test"], sparse, dim), sparse)
    load_name = "sklearn_load_svmlight" if sparse else "np_load"
    seconds[load_name], loaded = timed(lambda: load(paths["train"], sparse, dim))
    x, y = split(loaded, sparse)
    del loaded
    if sparse:
        text = paths["train"].read_bytes()
        seconds["beam_ml_parse_libsvm"], _ = timed(lambda: parse_chunks(text, dim))
        del text

    def sgd_pass():
        model = SGDClassifier(loss="log_loss", random_state=0)
        for start in range(0, n, BLOCK):
            model.partial_fit(x[start : start + BLOCK], y[start : start + BLOCK], classes=[0, 1])
        return model

    seconds["sgd_one_pass"], model = timed(sgd_pass)
    losses["sgd_one_pass"] = log_loss(model.predict_proba(test_x)[:, 1], test_y)
    seconds["logistic_regression_fit"], model = timed(
        lambda: LogisticRegression(C=1.0, max_iter=1000).fit(x, y), repeat=1
    )
    losses["logistic_regression_fit"] = log_loss(model.predict_proba(test_x)[:, 1], test_y)

    config = beam_ml.LinearLearnerConfig(
        predictor_type="binary_classifier",
        feature_dim=dim,
        num_models=args.models,
        mini_batch_size=args.mini_batch,
    )

    def in_memory():
        state = beam_ml.LinearLearnerState(config)
        for start in range(0, n, BLOCK):
            state.update(beam_ml.Block(x[start : start + BLOCK], y[start : start + BLOCK]))
        return state.derive(binary_classifier_model_selection_criteria="loss_function")

    seconds["beam_ml_state_in_memory"], model = timed(in_memory)
    losses["beam_ml_state_in_memory"] = log_loss(model.evaluate(test_x)[:, 0], test_y)
    seconds["beam_ml_end_to_end"], model = timed(
        lambda: beam_ml_end_to_end(paths, sparse, dim, config)
    )
    losses["beam_ml_end_to_end"] = log_loss(model.evaluate(test_x)[:, 0], test_y)
    selected = model.info
    if not args.no_peers:
        result = peer(
            VW_SCRIPT,
            str(paths["vw_train"]),
            str(paths["vw_test"]),
            str(DATA / "ll-vw.model"),
            str(DATA / "ll-vw.preds"),
        )
        if result:
            seconds["vw_one_pass"] = result["seconds"]
            losses["vw_one_pass"] = log_loss(np.array(result["probability"]), test_y)
        source = paths["train"] if sparse else paths["parquet"]
        result = peer(SPARK_SCRIPT, str(source), "libsvm" if sparse else "parquet", str(dim))
        if result:
            seconds["spark_load"], seconds["spark_fit"] = result["load_s"], result["fit_s"]
            seconds["spark_end_to_end"] = result["load_s"] + result["fit_s"]
            scores = test_x @ np.array(result["coef"]) + result["intercept"]
            losses["spark_end_to_end"] = log_loss(1 / (1 + np.exp(-scores)), test_y)

    ours, optimum = seconds["beam_ml_end_to_end"], losses["logistic_regression_fit"]
    ratios = {
        f"beam_ml / ({load_name} + sgd_one_pass)  [target <= 3]": ours
        / (seconds[load_name] + seconds["sgd_one_pass"]),
        "beam_ml log loss / optimum  [target <= 1.01]": losses["beam_ml_end_to_end"] / optimum,
    }
    if "vw_one_pass" in seconds:
        ratios["beam_ml / vw_one_pass  [target < 1]"] = ours / seconds["vw_one_pass"]
    if "spark_end_to_end" in seconds:
        ratios["spark_end_to_end / beam_ml  [target >= 10]"] = seconds["spark_end_to_end"] / ours

    kind = f"{n:,} x {dim} {'sparse one-hot (a9a-style)' if sparse else 'dense float32'}"
    print(
        f"\nLinear Learner benchmark: {kind}, num_models={args.models}, "
        f"mini_batch_size={args.mini_batch}, {os.cpu_count()} cores"
    )
    print(f"{'step':28s} {'seconds':>8s} {'rows/s':>12s} {'test log loss':>14s}")
    for name, value in seconds.items():
        loss = f"{losses[name]:14.4f}" if name in losses else ""
        print(f"{name:28s} {value:8.2f} {n / value:12,.0f} {loss}")
    print(f"\nbeam_ml selected: {selected}\n")
    for name, value in ratios.items():
        print(f"{name:52s} {value:8.3f}")
    print(
        json.dumps(
            {
                "rows": n,
                "dim": dim,
                "sparse": sparse,
                "models": args.models,
                "mini_batch_size": args.mini_batch,
                "seconds": seconds,
                "log_loss": losses,
                "ratios": ratios,
            },
            default=float,
        )
    )


if __name__ == "__main__":
    main()
