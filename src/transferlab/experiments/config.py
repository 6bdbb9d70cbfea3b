"""Experiment configuration: a YAML file validated by pydantic, and the presets shipped with the package.

Every error names the bad field, e.g. ``config field 'attack.eps.2': Input should be greater than or equal to 0``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from transferlab.errors import ConfigError
from transferlab.experiments.attack_config import SECTIONS, AttackSection, EvasionSection
from transferlab.experiments.schema import (MAX_BUDGETS, MAX_CONFIG_BYTES, MAX_PART, MAX_REPETITIONS, MAX_SURROGATE_DRAWS,
                                            Strict)


#: what a model, ensemble, saved-model or experiment name may look like: a name, never a path (names become file and
#: folder names inside the run folder)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: Any, field: str) -> str:
    """``name`` if it matches :data:`NAME_PATTERN` and holds no ``..``; otherwise a ConfigError naming ``field``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise ConfigError(f"{field}: {name!r} is not a valid name; use 1 to 64 letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit (a name is never a path: no '/', no '..')")
    return name


class DatasetConfig(Strict):
    """``name`` and ``options`` go to :func:`transferlab.datasets.load`; ``path`` is the data's file or folder.
    ``select_features: k`` keeps the top-k features by |P(x=1 | class 1) − P(x=1 | class 0)|, computed on each
    repetition's target training part only (the DREBIN authors' selection; feature names are kept)."""

    name: str = "mnist89"
    path: Optional[str] = None
    options: dict[str, Any] = Field(default_factory=dict)
    select_features: Optional[int] = Field(default=None, ge=1)


class SplitConfig(Strict):
    n_target: int = Field(gt=0, le=MAX_PART)
    n_surrogate: int = Field(gt=0, le=MAX_PART)
    n_test: int = Field(gt=0, le=MAX_PART)
    n_validation: int = Field(default=0, ge=0, le=MAX_PART)


class DetectorConfig(Strict):
    """How a target decides. ``fpr``: each target's threshold is set on its clean scores of the negative class
    (the class not attacked) so that its false-positive rate is ``fpr`` (e.g. 0.01, the paper's DREBIN operating
    point), on the split's validation part when it has one (``split.n_validation``), else on the target's training
    data; without it, the model's own decision (argmax of its scores)."""

    fpr: Optional[float] = Field(default=None, gt=0, lt=1)


class VarianceConfig(Strict):
    """V (Eq. 19): the variance of the surrogate's loss over ``n_surrogates`` surrogates trained on resampled
    surrogate data (bootstrap draws at fraction 1, other random subsets at smaller fractions)."""

    n_surrogates: int = Field(default=3, ge=2, le=MAX_SURROGATE_DRAWS)


class SweepConfig(Strict):
    """The paper's Fig. 3: white-box error and S of the MLP target as its weight decay grows, at budget ``eps``."""

    weight_decays: list[float] = Field(min_length=2, max_length=MAX_BUDGETS)
    eps: float = Field(default=0.3, gt=0, allow_inf_nan=False)

    @field_validator("weight_decays")
    @classmethod
    def _decays_non_negative(cls, value: list[float]) -> list[float]:
        for wd in value:
            if not (math.isfinite(wd) and wd >= 0):
                raise ValueError(f"nn_sweep.weight_decays: every weight decay must be a finite number >= 0, got {wd}")
        return value


class EnsembleConfig(Strict):
    """An ensemble surrogate: ``members`` (registry models, each trained on the surrogate's data) attacked as one,
    their losses averaged (``combine: loss``) or their unit-norm gradients averaged (``combine: normalized``)."""

    members: list[str] = Field(min_length=2)
    combine: Literal["loss", "normalized"] = "loss"


class ExperimentConfig(Strict):
    name: str = "experiment"
    kind: Literal["evasion", "poisoning"] = "evasion"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    split: SplitConfig
    repetitions: int = Field(default=1, ge=1, le=MAX_REPETITIONS)
    surrogate_fractions: list[float] = Field(default=[1.0], min_length=1, max_length=MAX_BUDGETS)
    surrogates: list[str] = Field(min_length=1)
    targets: list[str] = Field(min_length=1)
    white_box: bool = True
    model_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    ensembles: dict[str, EnsembleConfig] = Field(default_factory=dict)
    #: a user's own models, {name: path}: a folder written by ``transferlab.models.save``, a ``.skops`` file of a
    #: scikit-learn estimator or pipeline, or an ``.onnx`` file. A target always; a surrogate when differentiable
    #: (evasion only); in poisoning a target that is retrained on the poisoned data, so a recipe: a ``.skops`` file
    #: (fitted or not) or a ``models.save`` folder of a wrapped estimator, never an ``.onnx`` file. Checked against
    #: the data before any work (experiments.saved.check_saved_models); their files are part of the run's identity
    saved_models: dict[str, str] = Field(default_factory=dict)
    attack: AttackSection
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    variance: VarianceConfig = Field(default_factory=VarianceConfig)
    nn_sweep: Optional[SweepConfig] = None
    keep_points: bool = True
    seed: int = Field(default=0, ge=0, lt=2 ** 63)
    device: Literal["cpu", "cuda"] = "cpu"

    @field_validator("surrogate_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        for f in value:
            if not 0 < f <= 1:
                raise ValueError(f"fractions must be in (0, 1], got {f}")
        return sorted(set(value), reverse=True)

    @field_validator("ensembles", mode="before")
    @classmethod
    def _ensemble_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"members": v} if isinstance(v, list) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _known_models(self) -> ExperimentConfig:
        from transferlab.models import MODELS

        _check_names(self)
        for name in [*self.ensembles, *self.saved_models]:
            if name in MODELS:
                raise ValueError(f"ensembles/saved_models: {name!r} is a registry model's name; choose another")
        both = set(self.ensembles) & set(self.saved_models)
        if both:
            raise ValueError(f"saved_models: {sorted(both)[0]!r} also names an ensemble")
        for ensemble, spec in self.ensembles.items():
            for member in spec.members:
                if member not in MODELS or MODELS[member].factory.differentiable is False:
                    raise ValueError(f"ensembles.{ensemble}: member {member!r} is not a differentiable registry model")
        known = [*MODELS, *self.saved_models]
        for name in self.targets:
            if name not in known:
                hint = " (an ensemble is a surrogate only)" if name in self.ensembles else ""
                raise ValueError(f"targets: unknown model {name!r}{hint}; choose from {', '.join(known)}")
        for name in self.surrogates:
            if name not in known and name not in self.ensembles:
                raise ValueError(f"surrogates: unknown model {name!r}; choose from {', '.join(known)} or an ensemble")
        if self.kind == "poisoning" and self.ensembles:
            raise ValueError("ensembles are an evasion setting; poisoning differentiates the training of one "
                             "surrogate")
        for name, path in self.saved_models.items():
            if not isinstance(path, str) or not path.strip():
                raise ValueError(f"saved_models.{name}: give the path of a models.save folder, a .skops or an .onnx "
                                 "file")
            if self.kind == "poisoning" and name in self.surrogates:
                raise ValueError(f"surrogates: the saved model {name!r} cannot craft poisoning points: poisoning "
                                 "differentiates the surrogate's training (its implicit gradient), which transferlab "
                                 "has for its registry families only; use logistic, ridge, svm or svm_rbf models as "
                                 f"surrogates and keep {name!r} as a target (it is retrained on the poisoned data)")
            if self.kind == "poisoning" and name in self.targets and Path(path).suffix.lower() == ".onnx":
                raise ValueError(f"saved_models.{name}: an .onnx model cannot be retrained, and a poisoning target is "
                                 "retrained on the poisoned data; give a .skops file of the scikit-learn estimator "
                                 "(fitted or not) or a models.save folder of a wrapped estimator, its recipe")
        if (self.kind == "poisoning") != (self.attack.kind == "poisoning"):
            raise ValueError(f"attack.kind {self.attack.kind!r} does not fit an experiment of kind {self.kind!r}")
        if self.kind == "poisoning":
            if self.split.n_validation == 0:
                raise ValueError("split.n_validation: poisoning needs the attacker's validation set (> 0)")
            from transferlab.attacks.poisoning import family_for

            for name in self.surrogates:
                try:
                    family_for(MODELS[name].factory(**MODELS[name].params))  # saved models: refused above
                except Exception:
                    raise ValueError(f"surrogates: {name!r} cannot craft poisoning; use logistic, ridge, svm or "
                                     "svm_rbf models") from None
        for name in self.surrogates:
            if name in MODELS and MODELS[name].factory.differentiable is False:
                raise ValueError(f"surrogates: {name!r} has no input gradient and cannot craft attacks; use it as a "
                                 "target only")
        for name in self.model_overrides:
            if name in self.saved_models:
                raise ValueError(f"model_overrides: {name!r} is a saved model; its parameters are its own (set them "
                                 "before saving it)")
            if name not in MODELS:
                raise ValueError(f"model_overrides: unknown model {name!r}")
        for field_name in ("surrogates", "targets"):
            names = getattr(self, field_name)
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{field_name}: {repeated[0]!r} is listed twice; name each model once")
        for name, overrides in self.model_overrides.items():
            from transferlab.models.registry import check_overrides

            check_overrides(name, overrides)
        for name in self._double_init():
            if name not in self.surrogates and name not in self.targets:
                raise ValueError(f"attack.double_init: {name!r} is neither a surrogate nor a target of this config")
        if self.detector.fpr is not None and self.kind == "poisoning":
            raise ValueError("detector.fpr applies to evasion experiments")
        if self.dataset.select_features is not None:
            for name in dict.fromkeys([*self.targets, *self.surrogates, *(["nn_h"] if self.nn_sweep else [])]):
                if name in MODELS and "image_shape" in getattr(MODELS[name].factory, "PARAMS", {}):
                    raise ValueError(f"dataset.select_features keeps some of the features, and {name!r} needs whole "
                                     "images; drop one of them")
        return self

    def _double_init(self) -> list[str]:
        return self.attack.double_init if isinstance(self.attack, EvasionSection) else []

    def identity_hash(self) -> str:
        """Hash of everything that changes results (not the data folder's location). Fields left at their
        defaults are not part of it, so a field added in a later version does not change the identity of a run."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        if self.kind == "poisoning":
            # attack.warm_start came (issue 18) with its default on, and runs made before it crafted every fraction
            # from scratch, as warm_start: false does now: it is part of the identity when on and left out when
            # off, so such a run keeps its identity and a folder of unchained cells is never resumed as a chained run
            data["attack"].pop("warm_start", None)
            if self.attack.warm_start:
                data["attack"]["warm_start"] = True
        data.get("dataset", {}).pop("path", None)
        if data.get("dataset") == {}:
            del data["dataset"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _check_names(config: ExperimentConfig) -> None:
    """Every name the config gives (they become file names in the run folder) against :data:`NAME_PATTERN`."""
    check_name(config.name, "name")
    for field_name in ("surrogates", "targets"):
        for name in getattr(config, field_name):
            check_name(name, field_name)
    for ensemble, spec in config.ensembles.items():
        check_name(ensemble, "ensembles")
        for member in spec.members:
            check_name(member, f"ensembles.{ensemble}.members")
    for field_name in ("saved_models", "model_overrides"):
        for name in getattr(config, field_name):
            check_name(name, field_name)
    for name in config._double_init():
        check_name(name, "attack.double_init")


def _format_validation_error(exc: ValidationError, source: str) -> str:
    first = exc.errors()[0]
    loc = list(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if loc[:1] == ["attack"] and len(loc) > 1 and loc[1] in SECTIONS:  # the union's tag: the kind, not a field
        kind = loc.pop(1)
        if first["type"] == "extra_forbidden" and len(loc) in (2, 3):
            section = SECTIONS[kind] if len(loc) == 2 else SECTIONS[kind].model_fields["solver"].annotation
            part = "section" if len(loc) == 2 else "solver settings"
            message = (f"not a field of the {kind} attack's {part}; its fields are "
                       f"{', '.join(section.model_fields)}")  # type: ignore[union-attr]
    where = ".".join(str(p) for p in loc) or "(top level)"
    named = re.match(r"^([a-z_]+(?:\.[A-Za-z0-9_-]+)*): (.*)$", message)
    if named and where in ("(top level)", named.group(1).split(".")[0]):
        where, message = named.group(1), named.group(2)
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"{source}: config field '{where}': {message}{more}"


def parse_config(data: Any, source: str = "config") -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config is a YAML mapping of fields (name, dataset, split, ...)")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def preset_names() -> list[str]:
    folder = resources.files("transferlab").joinpath("presets")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; presets are {', '.join(preset_names())} "
                          "(or give the path of a YAML config)")
    return resources.files("transferlab").joinpath(f"presets/{name}.yaml").read_text()


def load_config(preset_or_path: str, data_path: str | None = None, device: str | None = None) -> ExperimentConfig:
    """A preset name or a YAML file; ``data_path`` and ``device`` override the config's dataset path and device."""
    path = Path(preset_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; give the path of a YAML config file (or a preset name)")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is {path.stat().st_size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,}")
        try:
            text, source = path.read_bytes().decode("utf-8"), str(path)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    else:
        text, source = preset_text(preset_or_path), f"preset {preset_or_path}"
    data = parse_yaml(text, source)
    if isinstance(data, dict):
        if data_path is not None:
            if not isinstance(data.get("dataset", {}), dict):
                raise ConfigError(f"{source}: config field 'dataset' must be a mapping (name, path, options)")
            data.setdefault("dataset", {})["path"] = data_path
        if device is not None:
            data["device"] = device
    return parse_config(data, source)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"key {key!r} on line {line} is given twice in the same mapping (first on line {first})")
        self.key, self.line, self.first = key, line, first


class _ConfigLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base loader reports it
                continue
            if first is not None:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, first)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as data, read with the safe loader. Anchors and aliases are refused: a few aliases can expand to
    an exponentially large document (a "billion laughs" bomb), and configs do not need them. A key given twice in
    one mapping is refused too (the YAML spec forbids it; PyYAML would keep the last value silently)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is {len(text):,} characters; a config is at most {MAX_CONFIG_BYTES:,}")
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError(f"{source} uses a YAML anchor or alias (&, *); write the values out instead")
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a subclass of the safe loader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{source}: line {exc.line}: key {exc.key!r} is given twice in the same mapping (first on "
                          f"line {exc.first}); keep one") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {str(exc).splitlines()[0]}") from None
