"""YAML configs onto typed dataclasses: nesting, overrides, and errors that name the file and the key."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from metarecipe.config import ConfigError, dump_yaml, from_mapping, load_config
from metarecipe.meta.adapt import AdaptConfig
from metarecipe.meta.trainer import MetaTrainConfig
from metarecipe.models import ModelConfig


@dataclass
class Experiment:
    model: ModelConfig
    train: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    algorithm: Literal["maml", "fomaml", "reptile"] = "maml"
    languages: list[str] = field(default_factory=list)
    minutes: float | None = None


def write(tmp_path, text, name="conf.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_nested_config_with_overrides(tmp_path):
    path = write(tmp_path, "model:\n  vocab_size: 40\n  d_model: 128\ntrain:\n  steps: 10\n  meta_lr: 1\n"
                           "algorithm: fomaml\nlanguages: [de, es]\n")
    config = load_config(Experiment, path, ["train.steps=20", "model.encoder=transformer", "minutes=5",
                                            "languages=[it]"])
    assert config.model == ModelConfig(vocab_size=40, d_model=128, encoder="transformer")
    assert config.train.steps == 20 and config.train.meta_lr == 1.0 and isinstance(config.train.meta_lr, float)
    assert config.train.query_seconds == MetaTrainConfig().query_seconds  # defaults fill the rest
    assert (config.algorithm, config.languages, config.minutes) == ("fomaml", ["it"], 5.0)
    assert load_config(Experiment, write(tmp_path, dump_yaml(config), "resolved.yaml")) == config


@pytest.mark.parametrize("text, overrides, message", [
    ("model: {vocab_size: 40, d_modle: 128}\n", [], "conf.yaml: unknown key 'model.d_modle'"),
    ("model: {vocab_size: 40}\nstpes: 3\n", [], "unknown key 'stpes' (known here: model, train"),
    ("model: {vocab_size: 40}\n", ["train.steps=ten"], "train.steps: expected int, got 'ten'"),
    ("model: {vocab_size: 40}\n", ["train.steps=true"], "train.steps: expected int, got True"),
    ("model: {vocab_size: 40.5}\n", [], "model.vocab_size: expected int, got 40.5"),
    ("model: {vocab_size: 40}\nalgorithm: anil\n", [], "algorithm: must be one of ['maml', 'fomaml', 'reptile']"),
    ("model: {vocab_size: 40}\nlanguages: de\n", [], "languages: expected a list, got 'de'"),
    ("model: {vocab_size: 40, encoder: lstm}\n", [], "encoder must be 'gru' or 'transformer'"),
    ("train: {steps: 3}\n", [], "missing 1 required positional argument: 'model'"),
    ("model: 3\n", [], "model: expected a mapping of ModelConfig fields, got 3"),
    ("model: !!python/object/apply:os.system [echo hi]\n", [], "conf.yaml: not valid YAML"),
    ("- a\n- b\n", [], "conf.yaml: a config is a mapping"),
    ("model: {vocab_size: 40}\n", ["steps"], "override 'steps': expected key=value"),
    ("model: {vocab_size: 40}\n", ["train.steps=-3"], "conf.yaml: train.steps: must be at least 1, got -3"),
    ("model: {vocab_size: 40}\n", ["train.meta_lr=0"], "conf.yaml: train.meta_lr: must be above 0, got 0.0"),
    ("model: {vocab_size: 40}\n", ["train.meta_lr=.nan"], "train.meta_lr: must be above 0, got nan"),
    ("model: {vocab_size: 40}\n", ["train.support_seconds=-0.5"], "train.support_seconds: must be above 0"),
    ("model: {vocab_size: 40}\n", ["train.query_seconds=0"], "train.query_seconds: must be above 0, got 0.0"),
    ("model: {vocab_size: 40}\n", ["train.tasks_per_batch=0"], "train.tasks_per_batch: must be at least 1"),
    ("model: {vocab_size: 40}\n", ["train.strategy=random"], "train.strategy: must be one of ['uniform'"),
])
def test_errors_name_the_file_and_the_key(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(Experiment, write(tmp_path, text), overrides)
    assert message in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("minutes=-1", "minutes: must be above 0, got -1.0"),
    ("minutes=0", "minutes: must be above 0, got 0.0"),
    ("lr=-0.1", "lr: must be above 0, got -0.1"),
    ("max_steps=0", "max_steps: must be at least 1, got 0"),
    ("held_out_share=1", "held_out_share: must lie in (0, 1), got 1.0"),
])
def test_adaptation_budgets_and_rates_out_of_range_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(AdaptConfig, overrides=["minutes=1", override])
    assert str(err.value) == message


def test_a_mapping_read_elsewhere_is_checked_as_a_file_is():
    assert from_mapping(ModelConfig, {"vocab_size": 9}, "model.pt: config") == ModelConfig(vocab_size=9)
    with pytest.raises(ConfigError, match=r"^model.pt: config: unknown key 'bogus' \(known here: vocab_size"):
        from_mapping(ModelConfig, {"vocab_size": 9, "bogus": 1}, "model.pt: config")
    with pytest.raises(ConfigError, match="^model.pt: config: expected a mapping of ModelConfig fields, got 3"):
        from_mapping(ModelConfig, 3, "model.pt: config")


def test_missing_file_and_defaults_only(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(MetaTrainConfig, tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"# caf\xe9\nsteps: 3\n")
    with pytest.raises(ConfigError, match="latin1.yaml: not UTF-8"):
        load_config(MetaTrainConfig, tmp_path / "latin1.yaml")
    assert load_config(MetaTrainConfig, overrides=["steps=7"]) == MetaTrainConfig(steps=7)
