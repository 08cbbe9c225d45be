"""beam-ml tune (beam_ml.tuning): successive halving over training parameters, checked
against independent scoring (scikit-learn) and one-pass training; derive grids checked
against deriving every model by hand; the command's outputs and mistakes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import log_loss

from beam_ml import PCAConfig, PCAState, read_checkpoint
from beam_ml.algorithms.kmeans import KMeansState
from beam_ml.algorithms.linear_learner import LinearLearnerState
from beam_ml.cli.main import main
from beam_ml.testing import assert_state_close, blobs, linear_data, pca_data
from beam_ml.tuning import parse_grid, successive_halving_schedule, tune

pytestmark = pytest.mark.beam


def test_parse_grid():
    grid = parse_grid(
        "learning_rate=1e-3, 1e-2; num_factors=16,64", {"learning_rate": float, "num_factors": int}
    )
    assert grid == {"learning_rate": [1e-3, 1e-2], "num_factors": [16, 64]}
    for text, message in [
        ("lr=1", "'lr' is not a parameter"),
        ("num_factors=2,2", "repeats a value"),
        ("num_factors", "is not NAME=VALUE"),
        ("num_factors=two", "a value of 'num_factors' is invalid"),
        (" ; ", "--grid is empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_grid(text, {"num_factors": int})


def test_successive_halving_schedule():
    assert successive_halving_schedule(9, 900, 3) == [(9, 100), (3, 300), (1, 900)]
    assert successive_halving_schedule(4, 1000, 2) == [(4, 250), (2, 500), (1, 1000)]
    assert successive_halving_schedule(5, 900, 3) == [(5, 300), (1, 900)]
    assert successive_halving_schedule(6, 900, 1) == [(6, 900)]  # eta 1: train them all
    with pytest.raises(ValueError, match="too small"):
        successive_halving_schedule(27, 10, 3)


def test_halving_keeps_the_best_by_an_independent_metric(tmp_path):
    train = linear_data(n=4000, predictor_type="binary_classifier", seed=1).block
    valid = linear_data(n=1000, predictor_type="binary_classifier", seed=2).block
    base = dict(
        predictor_type="binary_classifier",
        epochs=1,
        mini_batch_size=50,
        num_models=2,
        feature_dim=8,
    )
    grid = {"learning_rate": [1e-4, 1e-3, 0.03, 0.3]}
    result = tune(LinearLearnerState, base, grid, train, valid, str(tmp_path), eta=2)
    assert (
        result.strategy == "successive_halving"
        and result.metric == "binary_classification_cross_entropy"
    )
    assert result.schedule == [(4, 1000), (2, 2000), (1, 4000)]
    assert (
        result.rows_processed == 4 * 1000 + 2 * 1000 + 1 * 2000 and result.rows_full_grid == 16000
    )
    # The survivors of the first rung are the best half by scikit-learn's log loss of
    # each candidate's first checkpoint, scored here independently.
    losses = {}
    for c in range(4):
        state, _ = read_checkpoint(str(tmp_path / "candidates" / f"c{c:03d}" / "rows-0000001000"))
        assert state.n_seen == 1000
        probability = state.derive().evaluate(valid)[:, 0]
        losses[c] = log_loss(valid.labels, np.clip(probability, 1e-7, 1 - 1e-7))
    best_half = sorted(losses, key=losses.get)[:2]
    survivors = [e for e in result.leaderboard if e["rung"] >= 1]
    assert sorted(e["config"]["learning_rate"] for e in survivors) == sorted(
        grid["learning_rate"][c] for c in best_half
    )
    winner = result.leaderboard[0]
    assert winner["rows"] == 4000 and winner["rung"] == 2
    model, manifest = read_checkpoint(str(tmp_path / "model"))
    assert manifest["extra"]["params"] == {} and model.score(result.metric, valid) == pytest.approx(
        winner[result.metric]
    )


def test_resumed_survivor_equals_one_pass(tmp_path):
    # PCA's statistics merge exactly: a survivor resumed rung after rung holds the state
    # of one pass over the budget's rows (yesterday's state + new data).
    rows = pca_data(n=2700, seed=3)
    valid = pca_data(n=300, seed=4).rows
    base = dict(num_components=3, feature_dim=12)
    grid = {"algorithm_mode": ["regular", "sketch"], "extra_components": [1, 4]}
    result = tune(
        PCAState, base, grid, _block(rows.rows), _block(valid), str(tmp_path), eta=2, budget=2400
    )
    winner = result.leaderboard[0]
    state, _ = read_checkpoint(winner["checkpoint"])
    config = PCAConfig(**winner["config"])
    assert_state_close(state, PCAState(config).update(rows.rows[:2400]))
    assert result.rows_processed == 4 * 600 + 2 * 600 + 1200


def test_derive_grid_trains_once_and_picks_the_best_model(tmp_path):
    train = linear_data(n=3000, n_features=6, noise=2.0, seed=5).block
    valid = linear_data(n=500, n_features=6, noise=2.0, seed=6).block
    base = dict(predictor_type="regressor", epochs=1, feature_dim=6)
    grid = {"wd": [0.0, 1.0, 100.0], "l1": [0.0, 0.5]}
    result = tune(LinearLearnerState, base, grid, train, valid, str(tmp_path))
    assert result.strategy == "derive_grid" and result.rows_processed == 3000
    assert result.rows_full_grid == 6 * 3000
    # Every model derived by hand from one in-memory pass, scored with numpy.
    from beam_ml import LinearLearnerConfig

    state = LinearLearnerState(LinearLearnerConfig(**base)).update(train)
    rmse = {}
    for wd in grid["wd"]:
        for l1 in grid["l1"]:
            predicted = state.derive(wd=wd, l1=l1).evaluate(valid)[:, 0]
            rmse[(wd, l1)] = float(np.sqrt(np.mean((predicted - valid.labels) ** 2)))
    best = min(rmse, key=rmse.get)
    assert (result.best["params"]["wd"], result.best["params"]["l1"]) == best
    assert result.best["rmse"] == pytest.approx(rmse[best], rel=1e-6)
    # The baseline: each point trained on its own (6 passes) chooses the same model.
    again = tune(
        LinearLearnerState, base, grid, train, valid, str(tmp_path / "all"), retrain=True, eta=1
    )
    assert again.strategy == "train_all" and again.rows_processed == 6 * 3000
    assert again.best["params"] == result.best["params"]
    assert again.best["rmse"] == pytest.approx(result.best["rmse"], rel=1e-6)


def test_kmeans_k_grid_trains_the_largest_k(tmp_path):
    data = blobs(n=600, k=3, seed=7)
    result = tune(
        KMeansState,
        {},
        {"k": [2, 3, 4]},
        _block(data.rows[:500]),
        _block(data.rows[500:]),
        str(tmp_path),
    )
    assert result.strategy == "derive_grid" and result.best["config"]["k"] == 4
    assert [m["derive_params"]["k"] for m in result.best["models"]] == [2, 3, 4]
    msd = [m["msd"] for m in result.best["models"]]
    assert msd[1] < msd[0] / 10  # the third blob found


def _block(rows):
    from beam_ml import Block

    return Block(rows)


def test_the_command(tmp_path, capsys):
    for name, seed, n in (("train", 8, 2000), ("valid", 9, 400)):
        data = linear_data(n=n, n_features=4, predictor_type="binary_classifier", seed=seed).block
        np.savetxt(
            tmp_path / f"{name}.csv",
            np.column_stack([data.labels, data.features]),
            delimiter=",",
            fmt="%.9g",
        )
    args = ["tune", "linear_learner", "--input", str(tmp_path / "train.csv"), "--label_column", "0"]
    args += ["--validation", str(tmp_path / "valid.csv"), "--output", str(tmp_path / "out")]
    args += ["--predictor_type", "binary_classifier", "--epochs", "1", "--metric", "binary_f_beta"]
    criteria = "binary_classifier_model_selection_criteria=accuracy,f_beta,loss_function"
    assert main([*args, "--grid", f"{criteria};learning_rate=0.01,0.1", "--eta", "2"]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed["strategy"] == "successive_halving" and len(printed["leaderboard"]) == 2
    assert "binary_f_beta" in err.splitlines()[-3] and printed["best"]["rank"] == 1
    saved = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert len(saved["leaderboard"][0]["models"]) == 3  # every criterion derived, none retrained
    model, _ = read_checkpoint(str(tmp_path / "out" / "model"))
    assert model.FAMILY == "linear_learner"
    assert main([*args, "--grid", "lr=1"]) == 2
    assert "'lr' is not a parameter of this algorithm" in capsys.readouterr().err
    assert main([*args, "--grid", "learning_rate=0.1,1", "--learning_rate", "0.1"]) == 2
    assert "--grid and --learning_rate both set learning_rate" in capsys.readouterr().err
