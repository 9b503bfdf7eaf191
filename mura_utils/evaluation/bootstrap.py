"""The cluster bootstrap of every metric in ``metrics``: intervals, p-values and paired differences.

Why clusters: MURA valid's 1,199 studies come from 783 patients, and one patient's studies (and
images) are correlated. A bootstrap that resamples studies or images treats them as independent
and gives intervals that are too narrow, so the unit resampled here is the **patient** (on the
external set: the near-duplicate group). A resample draws patients with replacement, as
``sklearn.utils.resample`` draws rows; a patient drawn k times counts k times with all its studies
and images. That is the same as weighting every unit by its patient's draw count, so each metric is
computed for all resamples at once from a (resamples x units) weight matrix: no per-resample
DataFrame, and every statistic of a run (and of two runs compared) sees the **same** resamples.

A resample that holds one class only (AUROC undefined) is dropped from **every** metric, not only
AUROC (its kappa of 0 is a definition, not evidence), and the number dropped is recorded. Intervals
are percentile intervals of the remaining values, taken as order statistics: with n values the lower
bound is the r-th smallest and the upper the r-th largest, r = floor((n + 1) (1 - level) / 2). The
bootstrap p-value of a difference counts the same values, 2 min(k<=0 + 1, k>=0 + 1) / (n + 1), so an
interval that excludes 0 comes with p <= 1 - level and conversely.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mura_utils.evaluation.metrics import (
    LEVELS,
    METRIC_KEYS,
    check_predictions,
    check_probabilities,
    point_metrics,
    study_scores,
    weighted_metrics,
)

DEFAULT_RESAMPLES = 1000
_CHUNK = 256  # resamples per block: bounds memory to ~_CHUNK x units floats per matrix


def _require(predictions: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in predictions]
    if missing:
        raise ValueError(f"{what}: predictions lack column(s) {missing} (needed for the bootstrap)")


def resample_counts(n_groups: int, n_resamples: int, seed: int = 0, strata: np.ndarray | None = None) -> np.ndarray:
    """How often each of ``n_groups`` clusters is drawn in each resample (resamples x groups).

    Each resample draws ``n_groups`` clusters with replacement (numpy Generator); with ``strata``
    (one stratum per group, as sklearn's ``stratify``) each stratum keeps its own number of groups.
    """
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, n_groups), dtype=np.int32)
    members = [np.arange(n_groups)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    rows = np.arange(n_resamples)[:, None]
    for group_ids in members:
        drawn = group_ids[rng.integers(0, len(group_ids), (n_resamples, len(group_ids)))]
        np.add.at(counts, (np.broadcast_to(rows, drawn.shape), drawn), 1)
    return counts


class ClusterBootstrap:
    """Resamples of whole clusters (patients), drawn once and shared by every statistic computed
    with them: several metrics, levels and models on identical resamples (so differences pair)."""

    def __init__(
        self,
        clusters: Sequence,
        n_resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
        level: float = 0.95,
        unit: str = "patient",
        strata: Sequence | None = None,
    ):
        if n_resamples < 1:
            raise ValueError(f"bootstrap: n_resamples must be at least 1, not {n_resamples}")
        if not 0 < level < 1:
            raise ValueError(f"bootstrap: level must be in (0, 1), not {level}")
        cluster_values = pd.Series(np.asarray(clusters, dtype=object)).astype(str)
        if strata is None:
            self.clusters = np.unique(cluster_values.to_numpy())
            stratum_codes = None
        else:
            by_cluster = pd.Series(np.asarray(strata, dtype=object), index=cluster_values).groupby(level=0).first()
            self.clusters = by_cluster.index.to_numpy()
            stratum_codes = pd.factorize(by_cluster.to_numpy())[0]
        self.n_resamples, self.seed, self.level, self.unit = int(n_resamples), seed, level, unit
        self.counts = resample_counts(len(self.clusters), self.n_resamples, seed, stratum_codes)
        self._codes = pd.Index(self.clusters)

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    def codes(self, unit_clusters: Sequence) -> np.ndarray:
        """Position of each unit's cluster; raises for a cluster the bootstrap was not built on."""
        codes = self._codes.get_indexer(pd.Series(np.asarray(unit_clusters, dtype=object)).astype(str))
        if (codes < 0).any():
            raise ValueError(f"bootstrap: {int((codes < 0).sum())} unit(s) belong to no known {self.unit}")
        return codes

    def blocks(self, unit_clusters: Sequence):
        """(resamples x units) weight matrices, a block of resamples at a time."""
        codes = self.codes(unit_clusters)
        for start in range(0, self.n_resamples, _CHUNK):
            yield self.counts[start : start + _CHUNK][:, codes].astype(float)

    def interval(self, values: np.ndarray) -> list[float]:
        """Percentile interval of resampled values: the r-th smallest and r-th largest of the n
        values that are not NaN (dropped resamples), r = ``interval_rank(n, level)`` but at least 1
        (so fewer than 2 / (1 - level) - 1 values give their range); [nan, nan] if all are NaN."""
        values = np.sort(np.asarray(values, dtype=float)[~np.isnan(np.asarray(values, dtype=float))])
        if not len(values):
            return [float("nan"), float("nan")]
        rank = max(1, interval_rank(len(values), self.level))
        return [float(values[rank - 1]), float(values[len(values) - rank])]

    def resampled_metrics(self, labels, probabilities, unit_clusters, threshold: float) -> dict[str, np.ndarray]:
        """Each metric on every resample (arrays of length n_resamples) at one level; a resample
        holding one class only is NaN in every metric (dropped: ``dropped`` counts them)."""
        labels = np.asarray(labels, dtype=int)
        probabilities = check_probabilities(probabilities)
        parts = []
        for weights in self.blocks(unit_clusters):
            values = weighted_metrics(labels, probabilities, threshold, weights)
            one_class = (weights @ (labels == 1) == 0) | (weights @ (labels != 1) == 0)
            parts.append({key: np.where(one_class, np.nan, values[key]) for key in METRIC_KEYS})
        return {key: np.concatenate([part[key] for part in parts]) for key in METRIC_KEYS}

    @staticmethod
    def dropped(values: np.ndarray) -> int:
        """How many resamples a statistic was undefined on (NaN: one class only), left out of its interval."""
        return int(np.isnan(np.asarray(values, dtype=float)).sum())


def interval_rank(n: int, level: float) -> int:
    """Rank r of the percentile interval's bounds among n resampled values (r-th smallest, r-th
    largest): floor((n + 1) (1 - level) / 2), so that the interval excludes 0 exactly when
    ``bootstrap_p_value`` <= 1 - level. 0 when n is too small to resolve the level (n < 2 / (1 - level) - 1)."""
    return int(np.floor((n + 1) * (1 - level) / 2 + 1e-9))


def patient_bootstrap(
    predictions: pd.DataFrame, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = 0.95
) -> ClusterBootstrap:
    """The patient bootstrap of a predictions table (column ``patient`` required)."""
    _require(predictions, ["patient", "study", "label", "probability"], "patient bootstrap")
    return ClusterBootstrap(predictions["patient"], n_resamples, seed, level, unit="patient")


def level_resamples(
    predictions: pd.DataFrame,
    bootstrap: ClusterBootstrap,
    threshold: float = 0.5,
    image_threshold: float = 0.5,
    cluster: str = "patient",
) -> dict[str, dict[str, np.ndarray]]:
    """{'study': {metric: values}, 'image': {...}} on the bootstrap's resamples, one pass per level.
    ``threshold`` is the study-level threshold, ``image_threshold`` the image-level one."""
    studies = study_scores(predictions, cluster)
    return {
        "study": bootstrap.resampled_metrics(studies["label"], studies["probability"], studies["cluster"], threshold),
        "image": bootstrap.resampled_metrics(
            predictions["label"], predictions["probability"], predictions[cluster], image_threshold
        ),
    }


def confidence_intervals(
    predictions: pd.DataFrame,
    n_resamples: int = DEFAULT_RESAMPLES,
    threshold: float = 0.5,
    image_threshold: float = 0.5,
    seed: int = 0,
    level: float = 0.95,
    source: str | None = None,
) -> dict:
    """metrics.json's ``ci``: patient-bootstrap percentile intervals of every study and image metric,
    all from the same resamples: {"unit", "level", "resamples", "seed", "study": {metric: [lo, hi]}, "image": ...,
    "dropped_resamples": {"study": {metric: n}, "image": ...}} (resamples of one class only, left out).
    ``source`` (the run or file) names where invalid probabilities came from."""
    check_predictions(predictions, source)
    bootstrap = patient_bootstrap(predictions, n_resamples, seed, level)
    values = level_resamples(predictions, bootstrap, threshold, image_threshold)
    result = {"unit": bootstrap.unit, "level": level, "resamples": bootstrap.n_resamples, "seed": seed}
    for level_name in LEVELS:
        result[level_name] = {key: bootstrap.interval(values[level_name][key]) for key in METRIC_KEYS}
    result["dropped_resamples"] = {
        level_name: {key: bootstrap.dropped(values[level_name][key]) for key in METRIC_KEYS} for level_name in LEVELS
    }
    return result


def bootstrap_p_value(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'no difference': twice the smaller share of resampled
    differences on either side of 0, each share counted as (k + 1) / (n + 1), capped at 1 (NaN
    resamples left out). ``ClusterBootstrap.interval`` of the same values excludes 0 exactly when
    p <= 1 - level. Its smallest value, 2 / (n + 1) (no difference on the other side), is an upper
    bound: ``p_value_is_bound``."""
    deltas = np.asarray(deltas, dtype=float)
    deltas = deltas[~np.isnan(deltas)]
    if not len(deltas):
        return float("nan")
    below = (np.sum(deltas <= 0) + 1) / (len(deltas) + 1)
    above = (np.sum(deltas >= 0) + 1) / (len(deltas) + 1)
    return float(min(1.0, 2 * min(below, above)))


def p_value_is_bound(deltas: np.ndarray) -> bool:
    """Whether ``bootstrap_p_value`` is at its floor 2 / (n + 1): every resampled difference on one
    side of 0, so the resamples only say p <= that (more resamples would resolve a smaller p)."""
    deltas = np.asarray(deltas, dtype=float)
    deltas = deltas[~np.isnan(deltas)]
    return bool(len(deltas)) and bool(min(np.sum(deltas <= 0), np.sum(deltas >= 0)) == 0)


PAIRED_METRICS = {
    "study_kappa": ("study", "kappa"),
    "study_auroc": ("study", "auroc"),
    "image_auroc": ("image", "auroc"),
}


def paired_differences(
    pairs: Sequence[tuple[pd.DataFrame, pd.DataFrame]],
    bootstrap: ClusterBootstrap,
    thresholds: Sequence[tuple[float, float]] | None = None,
    image_thresholds: Sequence[tuple[float, float]] | None = None,
    metrics: Sequence[str] = tuple(PAIRED_METRICS),
) -> dict[str, dict]:
    """Paired A - B differences on identical resamples, averaged over ``pairs`` (e.g. seeds).

    Each pair is (A predictions, B predictions) over the same images; on every resample the
    difference of each pair is taken and the pairs' differences are averaged, so the interval is
    the one of the mean difference. Returns {metric: {"a", "b", "delta", "ci", "p", "p_is_bound",
    "dropped_resamples", "per_pair"}}: "a" and "b" are the point estimates averaged over pairs,
    "per_pair" each pair's own difference, "dropped_resamples" the resamples left out (one class
    only). "p_is_bound": p is its floor 2 / (n + 1), read it as p <= that. With too few usable
    resamples to resolve the level (fewer than 2 / (1 - level) - 1) "ci" is [nan, nan]: no p could
    agree with any interval.
    """
    thresholds = thresholds or [(0.5, 0.5)] * len(pairs)
    image_thresholds = image_thresholds or [(0.5, 0.5)] * len(pairs)
    points: dict[str, list] = {name: [] for name in metrics}
    deltas: dict[str, list] = {name: [] for name in metrics}
    for (a, b), (threshold_a, threshold_b), (image_a, image_b) in zip(pairs, thresholds, image_thresholds):
        sides = []
        for table, threshold, image_threshold in ((a, threshold_a, image_a), (b, threshold_b, image_b)):
            studies = study_scores(table)
            point = {
                "study": point_metrics(studies["label"], studies["probability"], threshold),
                "image": point_metrics(table["label"], table["probability"], image_threshold),
            }
            sides.append((point, level_resamples(table, bootstrap, threshold, image_threshold)))
        for name in metrics:
            level, key = PAIRED_METRICS[name]
            values = [np.nan if side[0][level][key] is None else side[0][level][key] for side in sides]
            points[name].append(values)
            deltas[name].append(sides[0][1][level][key] - sides[1][1][level][key])
    result = {}
    for name in metrics:
        a_value, b_value = np.mean(points[name], axis=0)
        mean_deltas = np.mean(deltas[name], axis=0)
        dropped = bootstrap.dropped(mean_deltas)
        resolvable = interval_rank(len(mean_deltas) - dropped, bootstrap.level) >= 1
        result[name] = {
            "a": float(a_value),
            "b": float(b_value),
            "delta": float(a_value - b_value),
            "ci": bootstrap.interval(mean_deltas) if resolvable else [float("nan"), float("nan")],
            "p": bootstrap_p_value(mean_deltas),
            "p_is_bound": p_value_is_bound(mean_deltas),
            "dropped_resamples": dropped,
            "per_pair": [float(a - b) for a, b in points[name]],
        }
    return result


def dropped_note(dropped: dict[str, int], resamples: int) -> str:
    """One sentence for every report that shows intervals: how many of ``resamples`` held one class
    only (``dropped``: {row or metric: count}) and were left out; "" when none were."""
    counts = {name: int(count) for name, count in dropped.items() if count == count}
    if not any(counts.values()):
        return ""
    if len(set(counts.values())) == 1:
        said = str(next(iter(counts.values())))
    else:
        said = "some (" + ", ".join(f"{name} {count}" for name, count in counts.items() if count) + ")"
    return (
        f"{said} of {resamples} resamples held one class only (AUROC undefined) and were left out of every "
        "metric's interval (and p-value, where one is given)"
    )


def verdict(delta: float, ci: Sequence[float], level: float = 0.95, what: str = "A - B") -> str:
    """A difference and its interval in words, for readers who check it against the table."""
    low, high = ci
    if np.isnan(low) or np.isnan(high):
        return f"{what}: {delta:+.3f}, no interval (too few resamples where it is defined)"
    span = f"{what} = {delta:+.3f}, {level:.0%} CI [{low:+.3f}, {high:+.3f}]"
    if low > 0:
        return f"{span}: the interval lies above 0, evidence that {what} > 0"
    if high < 0:
        return f"{span}: the interval lies below 0, evidence that {what} < 0"
    return f"{span}: the interval includes 0, no evidence either way"
