"""The config's ``attack`` section: a union discriminated on ``kind`` with one member per attack of the registry
(:data:`transferlab.attacks.EVASION_ATTACKS`) and one for poisoning. Each member's ``solver`` is its attack's own
settings model (the one the Python API validates with), so a new attack in the registry gets its member, and its
settings appear in the config's JSON schema, with no edit here. A missing ``kind`` is ``pgd_line_search``.

Evasion members: ``norm``, the budgets ``eps``, the box ``lb``/``ub``, ``loss``, and the threat-model pieces
``feature_addition`` (x′ ⪰ x0: features may only be added), ``binary`` (x′ ∈ {0, 1}^d; goes with norm 1, ε = number
of changed features), ``manipulable`` (feature-name prefixes of the features the attacker may change; the others
stay fixed), ``attack_class`` (attack only the test points of this class, by name or label, e.g. ``malware``),
``quantize`` (crafted points rounded onto the grid of multiples of 1/quantize, e.g. 255 for 8-bit images, staying
inside Φ), ``double_init`` (the models — as surrogates or white-box targets — for which Algorithm 1 also starts
from the source model's own training point that it scores most confidently in another class, keeping the better
result per point; the paper does this for nonlinear models) and ``warm_start`` (each budget starts from the points
crafted at the previous one, as the authors' security evaluation does, so a curve of nine budgets costs little
more than its largest budget).

Poisoning (``kind: poisoning``): ``fractions``, the poisoning points as fractions of the target's training set,
the box ``lb``/``ub``, ``warm_start`` (default on: each fraction's attacker starts from the points crafted at the
previous, smaller fraction — ``Poisoning.run(start=...)``, which keeps them unless its own data say a new set is
better —, so a curve over the fractions is one attacker adding points, and a white-box curve does not fall where the
attack keeps the smaller attacker's points; off: each fraction is crafted from scratch, as before issue 18) and
``solver`` (:class:`~transferlab.attacks.poisoning.PoisoningSettings`; the start draw is seeded from the run's
``seed`` and repetition).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, create_model, field_validator, model_validator

from transferlab.attacks import EVASION_ATTACKS, PoisoningSettings
from transferlab.attacks.constraints import parse_norm
from transferlab.errors import ConfigError
from transferlab.experiments.schema import MAX_BUDGETS, MAX_QUANTIZE, Strict

#: the kind a config's attack section has when it names none
DEFAULT_KIND = "pgd_line_search"


def _budgets(values: list[float], missing: str, valid: Callable[[float], bool], rule: str) -> list[float]:
    """The budgets sorted and without repeats, each ``valid`` (else ``rule``, with the value); none: ``missing``."""
    if not values:
        raise ValueError(missing)
    for value in values:
        if not valid(value):
            raise ValueError(f"{rule}, got {value}")
    return sorted(set(values))


class BoxSection(Strict):
    """The box [lb, ub] of every attack (null: unbounded on that side)."""

    lb: Optional[float] = 0.0
    ub: Optional[float] = 1.0

    @model_validator(mode="after")
    def _box(self) -> BoxSection:
        for name in ("lb", "ub"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"attack.{name}: must be a finite number or null (unbounded), got {value}")
        if self.lb is not None and self.ub is not None and not self.lb < self.ub:
            raise ValueError(f"attack.lb: {self.lb} must be below attack.ub ({self.ub}); swap or fix the box")
        return self


class EvasionSection(BoxSection):
    """The fields every evasion member has (see the module); each member adds ``kind`` and ``solver``."""

    kind: str
    norm: Literal["1", "2", "inf"] = "2"
    eps: list[float] = Field(default_factory=list, max_length=MAX_BUDGETS, validate_default=True)
    loss: Literal["margin", "cross_entropy"] = "margin"
    feature_addition: bool = False
    binary: bool = False
    manipulable: Optional[list[str]] = Field(default=None, min_length=1)
    attack_class: Optional[Union[int, str]] = None
    quantize: Optional[int] = Field(default=None, ge=1, le=MAX_QUANTIZE)
    double_init: list[str] = Field(default_factory=list)
    warm_start: bool = False

    @field_validator("norm", mode="before")
    @classmethod
    def _norm_as_text(cls, value: Any) -> Any:
        """The norm as the API reads it (:func:`~transferlab.attacks.constraints.parse_norm`: 2, 2.0, "l2", "ℓ2",
        "inf", "linf", "∞"...), as its text; anything else is left for the field's own error."""
        if value is None or isinstance(value, bool):
            return value
        try:
            return {1: "1", 2: "2", float("inf"): "inf"}[parse_norm(value)]
        except ConfigError:
            return value

    @field_validator("attack_class", mode="before")
    @classmethod
    def _class_name_or_label(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
            raise ValueError(f"attack.attack_class: give a class name or a label number, got {value!r}")
        return value

    @field_validator("eps")
    @classmethod
    def _eps_non_negative(cls, value: list[float]) -> list[float]:
        return _budgets(value, "an evasion attack needs eps, the list of budgets, e.g. [0, 0.5, 1, 2]",
                        lambda e: e >= 0 and e != float("inf"), "every budget must be a finite number >= 0")

    @model_validator(mode="after")
    def _norm_fits(self) -> EvasionSection:
        norms = EVASION_ATTACKS[self.kind].norms
        if self.norm not in norms:
            raise ValueError(f"attack.norm: the {self.kind} attack takes norm {' or '.join(norms)}; set norm: "
                             f"{norms[0]} (got {self.norm})")
        if self.binary and self.norm != "1":
            raise ValueError("binary features are attacked with an l1 budget (eps = number of changed features): "
                             "set norm: 1")
        return self

    @property
    def budgets(self) -> list[float]:
        return self.eps


class PoisoningSection(BoxSection):
    """``kind: poisoning`` (see the module)."""

    kind: Literal["poisoning"]
    lb: float = 0.0  # poisoning points live in a bounded box
    ub: float = 1.0
    fractions: list[float] = Field(default_factory=list, max_length=MAX_BUDGETS, validate_default=True)
    warm_start: bool = True
    solver: PoisoningSettings = Field(default_factory=PoisoningSettings)

    @field_validator("fractions")
    @classmethod
    def _fractions_in_range(cls, value: list[float]) -> list[float]:
        return _budgets(value, "a poisoning attack needs fractions, e.g. [0.05, 0.1, 0.2]", lambda f: 0 < f <= 1,
                        "poisoning fractions must be in (0, 1]")

    @property
    def budgets(self) -> list[float]:
        return [0.0, *self.fractions]


def _evasion_member(kind: str, attack: type) -> type[EvasionSection]:
    """The section of one registry attack: ``kind`` (the default kind may be left out) and ``solver``, typed by the
    attack's settings model."""
    section = create_model(f"{attack.__name__}Section", __base__=EvasionSection, __module__=__name__,
                           __doc__=f"``kind: {kind}``: {attack.__name__}, settings {attack.Settings.__name__}.",
                           kind=(Literal[kind], kind if kind == DEFAULT_KIND else ...),
                           solver=(attack.Settings, Field(default_factory=attack.Settings)))
    globals()[section.__name__] = section  # found by name, so a parsed config pickles (to worker processes)
    return section


#: the section of each attack kind
SECTIONS: dict[str, type[Strict]] = {**{kind: _evasion_member(kind, attack) for kind, attack in EVASION_ATTACKS.items()},
                                     "poisoning": PoisoningSection}


def _kind_of(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("kind", DEFAULT_KIND)
    return getattr(value, "kind", None)


AttackSection = Annotated[
    Union[tuple(Annotated[section, Tag(kind)] for kind, section in SECTIONS.items())],  # type: ignore[misc]
    Discriminator(_kind_of, custom_error_type="attack_kind",
                  custom_error_message=f"attack.kind: unknown attack kind; choose one of {', '.join(SECTIONS)}")]
