"""The config: paper defaults, profiles, YAML round trip and clear errors."""
import pytest

from ulvm.config import PROFILES, Config
from ulvm.errors import UlvmError


def test_defaults_are_the_paper_protocol():
    c = Config()
    assert (c.input_size, c.input_channels, c.num_classes, c.batch_size, c.epochs) == (256, 3, 1, 8, 250)
    assert (c.lr, c.betas, c.eps, c.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 1e-2)
    assert (c.t_max, c.eta_min) == (50, 1e-5)
    assert (c.bce_weight, c.dice_weight, c.dice_smooth) == (1.0, 1.0, 1.0)
    assert (c.seed, c.threshold, c.parallel, c.bridge, c.model) == (42, 0.5, 4, True, "ultralight")
    assert c.c_list == (8, 16, 24, 32, 48, 64) and c.amp is False
    assert PROFILES["paper"] == c


def test_profiles_and_overrides():
    quick = Config.profile("quick", epochs=2, parallel=1)
    assert quick.profile_name == "quick" and quick.epochs == 2 and quick.parallel == 1
    assert quick.max_images is not None and quick.epochs < Config().epochs
    with pytest.raises(UlvmError, match="unknown profile 'fast'"):
        Config.profile("fast")
    with pytest.raises(UlvmError, match="unknown config field.*epoch\\b"):
        Config.profile("paper", epoch=3)


def test_yaml_round_trip(tmp_path):
    config = Config.profile("quick", betas=[0.8, 0.99], fold=2, lr=2)
    path = tmp_path / "config.yaml"
    config.to_yaml(path)
    again = Config.from_yaml(path)
    assert again == config and again.betas == (0.8, 0.99) and isinstance(again.lr, float)


@pytest.mark.parametrize("text, message", [
    ("epochs: ten\n", "epochs='ten' must be of type int"),
    ("parallel: 3\n", "parallel=3 must be 1, 2 or 4"),
    ("input_size: 100\n", "multiple of 32"),
    ("augment: fancy\n", "augment='fancy'"),
    ("batch: 8\n", "unknown config field"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("epochs: [1\n", "not valid YAML"),
    ("c_list: [8, 16.5, 24, 32, 48, 64]\n", "must be a list of integers"),
    ("betas: [0.9, yes]\n", "must be a list of numbers"),
    ("eps: 0\n", "eps=0.0 must be > 0"),
    ("betas: [0.9, 1.5]\n", "in [0, 1)"),
    ("dice_weight: -1\n", "dice_weight and dice_smooth must be >= 0"),
])
def test_bad_yaml_names_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UlvmError, match="bad.yaml") as error:
        Config.from_yaml(path)
    assert message in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(UlvmError, match="nothere.yaml: cannot read config"):
        Config.from_yaml(tmp_path / "nothere.yaml")


def test_run_settings_are_not_part_of_the_protocol():
    from ulvm.config import RunSettings
    old = Config().to_dict() | {"backend": "triton", "cuda_graph": False, "eval_batch_size": 4}   # an older run
    assert Config.from_dict(old) == Config()                  # a run resumes on any backend
    assert "backend" not in Config().to_dict()
    with pytest.raises(UlvmError, match="eval_batch_size=0"):
        RunSettings(eval_batch_size=0)


def test_set_overrides_are_read_as_yaml_and_a_missing_equals_sign_is_named():
    from ulvm.config import parse_overrides

    assert parse_overrides(["epochs=3", " bridge = false", "betas=[0.9, 0.99]"]) == {
        "epochs": 3, "bridge": False, "betas": [0.9, 0.99]}
    with pytest.raises(UlvmError, match="--set 'epochs3': expected FIELD=VALUE"):
        parse_overrides(["epochs3"])


def test_nan_and_infinite_values_are_refused():
    """nan passes `lr <= 0` unnoticed: `--set lr=.nan` trained a run of nan losses (issue 30)."""
    from ulvm.config import parse_overrides

    for item in ("lr=.nan", "lr=.inf", "weight_decay=.nan", "betas=[0.9, .nan]", "threshold=.nan"):
        with pytest.raises(UlvmError, match="must be a finite number"):
            Config().replace(**parse_overrides([item]))


def test_a_device_torch_cannot_run_ulvm_on_is_a_clear_error():
    from ulvm.runtime import resolve_device

    for device in ("tpu", "xla", "cuda:x", ""):
        with pytest.raises(UlvmError, match="unknown; use auto, cpu, cuda or cuda:N"):
            resolve_device(device)
