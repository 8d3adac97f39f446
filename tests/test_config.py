"""YAML configs onto typed dataclasses: nesting, overrides, and errors that name the file and the key."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from metarecipe.config import ConfigError, dump_yaml, load_config
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
])
def test_errors_name_the_file_and_the_key(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(Experiment, write(tmp_path, text), overrides)
    assert message in str(err.value)


def test_missing_file_and_defaults_only(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(MetaTrainConfig, tmp_path / "missing.yaml")
    assert load_config(MetaTrainConfig, overrides=["steps=7"]) == MetaTrainConfig(steps=7)
