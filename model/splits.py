"""Which training videos each model holds out: one stratified held-out part (a calibrated run) or
K stratified folds (a cross-fitted ensemble, member k holding out fold k).

A pure function of the names, labels and seed, in the training stage: the split decides what a
model is trained on, and the held-out part is then where its operating point is chosen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from vadpipe.errors import ConfigError

__all__ = ["stratified_holdout", "stratified_folds"]


def stratified_holdout(labels: Mapping[str, int], *, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split videos into (training, held-out), the same share of each class held out.

    Per class, ``round(fraction * n)`` videos are held out, but at least one and never all,
    so both parts see both classes. The pick depends only on the names, labels and ``seed``.

    Raises:
        ConfigError: ``fraction`` outside (0, 1), or a class with fewer than 2 videos.

    Example:
        >>> train, held = stratified_holdout({f"v{i}": i % 2 for i in range(8)}, fraction=0.25, seed=0)
        >>> len(train), len(held)
        (6, 2)
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    train: list[str] = []
    held: list[str] = []
    for label, word in ((0, "normal"), (1, "anomalous")):
        names = sorted(name for name, y in labels.items() if y == label)
        if len(names) < 2:
            raise ConfigError(
                f"holding out videos for calibration needs at least 2 {word} training videos, "
                f"got {len(names)}; add videos or train without calibration (holdout fraction 0)"
            )
        k = min(max(int(math.floor(fraction * len(names) + 0.5)), 1), len(names) - 1)
        order = rng.permutation(len(names))
        held += [names[i] for i in order[:k]]
        train += [names[i] for i in order[k:]]
    return sorted(train), sorted(held)


def stratified_folds(labels: Mapping[str, int], *, folds: int, seed: int) -> list[list[str]]:
    """Split videos into ``folds`` disjoint held-out folds with each class spread evenly
    (scikit-learn's shuffled `StratifiedKFold` over the sorted names, seeded): a cross-fitted
    ensemble's member k holds out fold k and trains on the others, so every video is trained on
    by ``folds - 1`` members and held out by one.

    Raises:
        ConfigError: ``folds`` < 2, or a class with fewer than ``folds`` videos.

    Example:
        >>> [len(f) for f in stratified_folds({f"v{i}": i % 2 for i in range(8)}, folds=4, seed=0)]
        [2, 2, 2, 2]
    """
    from sklearn.model_selection import StratifiedKFold

    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ConfigError(f"folds must be an integer >= 2, got {folds!r}")
    names = sorted(labels)
    y = np.array([int(labels[name]) for name in names])
    for label, word in ((0, "normal"), (1, "anomalous")):
        if int((y == label).sum()) < folds:
            raise ConfigError(
                f"{folds} cross-fitted folds need at least {folds} {word} training videos, "
                f"got {int((y == label).sum())}"
            )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [sorted(names[i] for i in held) for _, held in splitter.split(names, y)]
