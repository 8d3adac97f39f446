"""How a model is adapted to a target: the update rule and the model that rule trains, decided once.

A meta-learner ends with an AdaptationPlan (MetaAlgorithm.plan), meta-train stores it in the model file (its
"adaptation" entry), and `adapt` builds the model to adapt from it with `model_to_adapt`, the one place where a
model file becomes what adaptation trains: the file's model itself, a progressive column grown beside it
(frozen), or a fresh initialisation of its architecture (the scratch baseline). An adaptation config's `rule`
(sgd, head, metasgd, input, or pnn: sgd on a new column) and `scratch` replace the stored plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metarecipe.config import ConfigError
from metarecipe.meta.adapt import RULES  # the update rules
from metarecipe.models import BatchedCTCModel, ProgressiveCTCModel

RULE_OPTIONS = (*RULES, "pnn")  # what an adaptation config's `rule` may say
COLUMNS = ("source", "random")  # how a progressive column starts (metarecipe.models.progressive)


@dataclass(frozen=True)
class AdaptationPlan:
    rule: str = "sgd"  # sgd (every parameter), head (ANIL: the output layer), metasgd (the learned rates), input
    column: str | None = None  # grow a progressive column beside the frozen model, started as COLUMNS says
    fresh: bool = False  # train a fresh initialisation of the model's architecture instead (scratch)

    def __post_init__(self):
        if self.rule not in RULES:
            raise ConfigError(f"rule: must be one of {list(RULE_OPTIONS)}, got {self.rule!r}")
        if self.column not in (None, *COLUMNS):
            raise ConfigError(f"adaptation column must be one of {list(COLUMNS)}, got {self.column!r}")

    @property
    def name(self) -> str:
        """The rule as an adaptation config writes it (pnn for sgd on a new column)."""
        return "pnn" if self.column is not None else self.rule

    def record(self) -> dict:
        """The plan as model files store it."""
        return {"rule": self.rule, "column": self.column, "fresh": self.fresh}

    @classmethod
    def from_option(cls, rule: str) -> AdaptationPlan:
        """The plan of an adaptation config's `rule` (RULE_OPTIONS)."""
        if rule not in RULE_OPTIONS:
            raise ConfigError(f"rule: must be one of {list(RULE_OPTIONS)}, got {rule!r}")
        return cls("sgd", "source") if rule == "pnn" else cls(rule)

    @classmethod
    def stored(cls, record: dict | None, info: dict, source) -> AdaptationPlan:
        """The plan a model file stores (its "adaptation" entry; files written before it: the rule in its
        info), the plain sgd plan where it stores none; ConfigError naming `source` when it is malformed."""
        if record is None:
            return cls.from_option(info.get("rule", "sgd")) if info.get("rule") in RULE_OPTIONS else cls()
        try:
            return cls(record.get("rule", "sgd"), record.get("column"), bool(record.get("fresh", False)))
        except ConfigError as err:
            raise ConfigError(f"{source}: its adaptation entry: {err}") from None


def model_to_adapt(model: BatchedCTCModel | ProgressiveCTCModel, plan: AdaptationPlan, seed: int = 0) -> nn.Module:
    """What adaptation trains under `plan`: the model, a new column beside it, or a fresh model (seeded by
    `seed`) of its architecture. ConfigError for a column on a model that is already progressive."""
    if plan.fresh:
        torch.manual_seed(seed)
        return BatchedCTCModel(model.config)
    if plan.column is not None:
        if not isinstance(model, BatchedCTCModel):
            raise ConfigError("rule: pnn grows a column on a plain model; this one is already progressive")
        return ProgressiveCTCModel([model], plan.column)
    return model
