"""The manifest keys of a run folder, typed: one stage run (:class:`StageKey`) or one evaluated report row
(:class:`EvalKey`). Each formats to the string the manifest stores and parses back from it, so no other module
builds or regexes these strings.

::

    str(StageKey("mmga", 1, "stage2", seed=0))   == "seed_0/mmga/round_1/stage2"
    str(EvalKey("no_align", seed=0, round=2))     == "eval/seed_0/no_align/round_2"
    StageKey.parse("seed_0/mmga/round_1/stage2")  == StageKey("mmga", 1, "stage2", seed=0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal, get_args

Stage = Literal["stage1", "stage2"]
STAGES: tuple[str, ...] = get_args(Stage)
CORPUS_KEY = "corpus/generate"  # the generated synthetic corpus's entry

_NAME = r"[A-Za-z0-9_]+"
_SEED = r"(?:seed_(?P<seed>\d+)/)?"
_STAGE_RE = re.compile(rf"^{_SEED}(?P<variant>{_NAME})/round_(?P<round>\d+)/(?P<stage>stage[12])$")
_EVAL_RE = re.compile(rf"^eval/{_SEED}(?P<row>{_NAME})(?:/round_(?P<round>\d+))?$")


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
        raise ValueError(f"{what} must be a name of letters, digits and '_', got {name!r}")


def _check_index(what: str, value: int | None, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be an int >= 0, got {value!r}")


def seed_prefix(seed: int | None) -> str:
    """``"seed_<s>/"`` for a training seed, ``""`` for none (rows without a trained variant, old run folders)."""
    return "" if seed is None else f"seed_{seed}/"


@dataclass(frozen=True, order=True)
class StageKey:
    """One stage run: ``variant``'s ``stage`` in round ``round`` of training seed ``seed``."""

    variant: str
    round: int
    stage: Stage
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_name("variant", self.variant)
        _check_index("round", self.round, optional=False)
        _check_index("training seed", self.seed, optional=True)
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; expected one of {STAGES}")

    def __str__(self) -> str:
        return f"{seed_prefix(self.seed)}{self.variant}/round_{self.round}/{self.stage}"

    @classmethod
    def parse(cls, text: str) -> StageKey | None:
        """The key ``text`` names, or None when it is no stage key."""
        match = _STAGE_RE.match(text)
        if match is None:
            return None
        seed = None if match["seed"] is None else int(match["seed"])
        return cls(match["variant"], int(match["round"]), match["stage"], seed)  # type: ignore[arg-type]

    def of_round(self, round_idx: int) -> StageKey:
        return replace(self, round=round_idx)

    def of_stage(self, stage: Stage) -> StageKey:
        return replace(self, stage=stage)


@dataclass(frozen=True)
class EvalKey:
    """One evaluated report row of training seed ``seed``; rows that read the last round carry it, so that a
    longer run (more ``--rounds``) evaluates them anew."""

    row: str
    seed: int | None = None
    round: int | None = None

    def __post_init__(self) -> None:
        _check_name("row", self.row)
        _check_index("training seed", self.seed, optional=True)
        _check_index("round", self.round, optional=True)

    def __str__(self) -> str:
        key = f"eval/{seed_prefix(self.seed)}{self.row}"
        return key if self.round is None else f"{key}/round_{self.round}"

    @classmethod
    def parse(cls, text: str) -> EvalKey | None:
        """The key ``text`` names, or None when it is no evaluation key."""
        match = _EVAL_RE.match(text)
        if match is None:
            return None
        seed = None if match["seed"] is None else int(match["seed"])
        round_idx = None if match["round"] is None else int(match["round"])
        return cls(match["row"], seed, round_idx)
