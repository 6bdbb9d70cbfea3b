"""The run's data in a process: the dataset, each repetition's split (feature-selected once), and the small cache
that holds them and the per-repetition state of cells (a repetition's targets). Cells are pure functions of their
key, so what is cached is what a cell would compute."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Callable

from transferlab import datasets
from transferlab.experiments.config import ExperimentConfig

_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 6


def cached(key: tuple, make: Callable[[], Any]) -> Any:
    """The value of ``key`` in this process's small LRU cache (datasets, splits, a repetition's targets), made by
    ``make()`` on a miss. Cells are pure functions of their key, so a cached value is what a cell would compute."""
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = make()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def clear_cache() -> None:
    _CACHE.clear()


def _data_key(config: ExperimentConfig) -> tuple:
    return (config.dataset.name, config.dataset.path, json.dumps(config.dataset.options, sort_keys=True))


def load_dataset(config: ExperimentConfig) -> datasets.Dataset:
    """The config's dataset (loaded once per process)."""
    def make() -> datasets.Dataset:
        options = dict(config.dataset.options)
        if config.dataset.path is not None:
            options["path"] = config.dataset.path
        return datasets.load(config.dataset.name, **options)

    return cached(("dataset", *_data_key(config)), make)


def load_split(config: ExperimentConfig, repetition: int) -> datasets.Split:
    """The parts of one repetition; with ``dataset.select_features`` every part keeps the top-k features chosen on
    the target training part."""
    c = config

    def make() -> datasets.Split:
        parts = datasets.split(load_dataset(c), c.split.n_target, c.split.n_surrogate, c.split.n_test,
                               c.split.n_validation, repetition=repetition, seed=c.seed)
        if c.dataset.select_features is None:
            return parts
        from transferlab.datasets.selection import select_features

        columns = select_features(parts.target, c.dataset.select_features)
        keep = lambda d: None if d is None else d.select_columns(columns)  # noqa: E731
        return datasets.Split(keep(parts.target), keep(parts.surrogate), keep(parts.test), keep(parts.validation),
                              parts.repetition, parts.seed)

    key = ("split", *_data_key(c), c.dataset.select_features, c.split.model_dump_json(), c.seed, repetition)
    return cached(key, make)
