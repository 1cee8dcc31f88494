"""Evaluation: pooled metrics of best.pt equal the metrics of its own predictions; results JSON; the CLI."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import CPU, interrupted_fit, tiny_config, write_tiny_prepared
from ulvm.cli import main
from ulvm.data.tensors import split_tensors
from ulvm.engine.checkpoint import load_run
from ulvm.engine.evaluate import evaluate, write_results
from ulvm.engine.train import fit
from ulvm.errors import RunError
from ulvm.metrics import pooled_metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_tiny_prepared(root)
    run = root / "run"
    fit(tiny_config(epochs=2), data, run, settings=CPU, progress=False)
    return data, run


def test_pooled_metrics_are_those_of_the_best_models_predictions(trained):
    data, run = trained
    results = evaluate(run, data, settings=CPU, bootstrap=200)
    model, config = load_run(run)
    from ulvm.data import load_prepared
    images, masks, ids = split_tensors(load_prepared(data), "test", config, torch.device("cpu"))
    with torch.no_grad():
        expected = pooled_metrics(model(images), masks, config.threshold)
    assert results["pooled"] == pytest.approx(expected)
    assert results["per_image"]["ids"] == ids and len(results["per_image"]["dsc"]) == len(ids) == 4
    low, high = results["dsc_ci95"]
    assert 0.0 <= low <= high <= 1.0
    assert results["best_epoch"] == torch.load(run / "best.pt", weights_only=True)["epoch"]
    assert results["external"] is False and results["config"] == config.to_dict()
    assert results["machine"]["device"] == "cpu" and results["code_version"]
    assert results["data"]["manifest_hash"] and results["n_images"] == 4


def test_results_json_and_prediction_overlays(trained, tmp_path):
    data, run = trained
    results = evaluate(run, data, settings=CPU, bootstrap=0, save_predictions=tmp_path / "predictions")
    path = write_results(results)
    assert path.parent == run and path.name == "results_prepared_test.json"
    assert json.loads(path.read_text())["pooled"] == results["pooled"]
    assert "dsc_ci95" not in results
    first = results["per_image"]["ids"][0]
    overlay = np.asarray(Image.open(tmp_path / "predictions" / f"{first}_overlay.png"))
    predicted = np.asarray(Image.open(tmp_path / "predictions" / f"{first}_pred.png"))
    assert overlay.shape == (32, 32, 3) and predicted.shape == (32, 32)
    assert set(np.unique(predicted)) <= {0, 255}
    # the masks drawn are those scored: the prediction at the threshold, the ground truth at 0.5
    model, config = load_run(run)
    from ulvm.data import load_prepared
    images, masks, ids = split_tensors(load_prepared(data), "test", config, torch.device("cpu"))
    with torch.no_grad():
        probs = model(images[:1])
    assert np.array_equal(predicted == 255, probs[0, 0].numpy() >= config.threshold)
    green = np.all(overlay == (0, 255, 0), axis=-1)
    assert green.any() and not (green & (masks[0, 0].numpy() < 0.5)).any()
    with pytest.raises(RunError, match="save_predictions=True needs a run folder"):
        evaluate(model, data, config=config, settings=CPU, bootstrap=0, save_predictions=True)


def test_external_validation_on_another_prepared_dataset(trained, tmp_path):
    data, run = trained
    other = write_tiny_prepared(tmp_path, n=12, seed=5)
    results = evaluate(run, other, settings=CPU, bootstrap=50)
    assert results["external"] is True and results["data"]["root"] == str(other)
    assert results["n_images"] == 4 and 0.0 <= results["pooled"]["dsc"] <= 1.0


def test_cli_train_then_test(tmp_path, capsys):
    data = write_tiny_prepared(tmp_path)
    config = tmp_path / "tiny.yaml"
    tiny_config(epochs=1).to_yaml(config)
    run = tmp_path / "cli_run"
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(config), "--device", "cpu",
                 "--no-progress", "--set", "seed=3"]) == 0
    out = capsys.readouterr().out
    assert "best epoch 1" in out and "DSC" in out and (run / "results_prepared_test.json").is_file()
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(config), "--device", "cpu",
                 "--set", "seed=3"]) == 2                                      # finished: refused
    assert "already finished" in capsys.readouterr().err
    with pytest.raises(SystemExit):                                            # which one would count?
        main(["train", "--data", str(data), "--out", str(run), "--config", str(config), "--profile", "quick"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["test", "--run", str(run), "--device", "cpu", "--bootstrap", "100", "--save-predictions"]) == 0
    assert "results_prepared_test.json" in capsys.readouterr().out
    assert any((run / "predictions_prepared_test").glob("*_overlay.png"))


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="best.pt: checkpoint not found"):
        evaluate(tmp_path, write_tiny_prepared(tmp_path), settings=CPU)


def test_a_model_object_evaluates_like_its_run(trained):
    """The path for weights from elsewhere (e.g. an official .pth loaded with load_model_state)."""
    data, run = trained
    model, config = load_run(run)
    from_model = evaluate(model, data, config=config, settings=CPU, bootstrap=0)
    from_run = evaluate(run, data, settings=CPU, bootstrap=0)
    assert from_model["pooled"] == from_run["pooled"] and "run_dir" not in from_model


@pytest.mark.parametrize("layout", ["older_version", "official_weights"])
def test_a_run_folder_of_another_format_is_a_clear_error(trained, tmp_path, capsys, layout):
    """A run written before `data.content_hash` existed, or official weights saved as best.pt."""
    data, run = trained
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    if layout == "older_version":
        del checkpoint["data"]["content_hash"]
        missing = "data.content_hash"
    else:
        checkpoint, missing = checkpoint["model"], "optimizer"
    old = tmp_path / "old_run"
    old.mkdir()
    for name in ("best.pt", "last.pt"):
        torch.save(checkpoint, old / name)
    for call in (lambda: evaluate(old, data, settings=CPU), lambda: load_run(old),
                 lambda: fit(tiny_config(epochs=2), data, old, settings=CPU, progress=False)):
        with pytest.raises(RunError, match=f"\\.pt: not a run checkpoint of this ulvm version.*missing.*{missing}"):
            call()
    assert main(["test", "--run", str(old), "--device", "cpu"]) == 2
    assert "best.pt: not a run checkpoint" in capsys.readouterr().err


def test_results_of_another_dataset_with_the_same_folder_name_are_not_overwritten(trained, tmp_path):
    data, run = trained
    twin = write_tiny_prepared(tmp_path, n=12, seed=5)                  # also a folder named "prepared"
    assert twin.name == data.name
    write_results(evaluate(run, data, settings=CPU, bootstrap=0), run)
    with pytest.raises(RunError, match="holds the results of another dataset with the same folder name"):
        write_results(evaluate(run, twin, settings=CPU, bootstrap=0), run)


def test_a_run_trained_with_a_relative_path_tests_from_anywhere_and_says_where_the_path_came_from(
        tmp_path, monkeypatch, capsys):
    write_tiny_prepared(tmp_path)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "tiny.yaml"
    tiny_config(epochs=2).to_yaml(config)
    assert main(["train", "--data", "prepared", "--out", "run", "--config", str(config), "--device", "cpu",
                 "--no-progress", "--no-test"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["test", "--run", "../run", "--device", "cpu", "--bootstrap", "0"]) == 0
    (tmp_path / "prepared").rename(tmp_path / "moved")
    assert main(["test", "--run", "../run", "--device", "cpu"]) == 2
    assert "the path is the one stored in the checkpoint" in capsys.readouterr().err


def test_testing_an_unfinished_run_warns(trained, tmp_path, capsys):
    data, _ = trained
    run = tmp_path / "run"
    interrupted_fit(tiny_config(epochs=3), data, run, pytest.MonkeyPatch(), after_epochs=1)
    assert main(["test", "--run", str(run), "--data", str(data), "--device", "cpu", "--bootstrap", "0"]) == 0
    assert "has not finished training (epoch 1 of 3)" in capsys.readouterr().err


def test_a_test_split_holding_training_images_is_refused_with_their_count(tmp_path, capsys):
    """The run's data folder prepared again with another seed: its "test" images were training images."""
    from ulvm.data import prepare

    data = write_tiny_prepared(tmp_path)
    run = tmp_path / "run"
    fit(tiny_config(epochs=1), data, run, settings=CPU, progress=False)
    assert evaluate(run, data, settings=CPU, bootstrap=0)["seen_in_training"] == 0
    prepare("folder", tmp_path / "raw", data, size=32, counts=(12, 4, 4), folds=0, workers=1, seed=7, overwrite=True)
    assert main(["test", "--run", str(run), "--device", "cpu", "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert "of the 4 test images were training or validation images of" in err and "would not be a test" in err
    assert not list(run.glob("results_*.json"))
    assert evaluate(run, data, split="train", settings=CPU, bootstrap=0)["seen_in_training"] > 0   # not a test
