"""One definition of every metric and of a study's probability, shared by evaluation, training,
report, compare and the external evaluation; ``bootstrap`` resamples them.

Definitions (point estimates; ``bootstrap`` applies the same formulas with resample weights):

- study probability = mean of its images' probabilities; study metrics use the study threshold,
  image metrics the image threshold (a threshold is applied at the level it was chosen for);
- AUROC = P(score of an abnormal unit > score of a normal one) + 1/2 P(tie) (Mann-Whitney; equal
  to sklearn's ``roc_auc_score``); undefined (NaN) when a sample holds one class;
- Cohen's kappa = (p_o - p_e) / (1 - p_e). When p_e = 1 (truth and prediction are both one and the
  same class) it is 0/0; it is **defined as 0** here: such a sample shows no agreement beyond
  chance. With one true class but mixed predictions the formula itself gives 0. Never NaN as a
  point estimate (a bootstrap resample of one class is dropped: ``bootstrap``);
- sensitivity / specificity: NaN without positives / negatives; F1 = 2TP / (2TP + FP + FN), 0 when
  that is 0/0 (sklearn's ``zero_division=0``).

A probability that is NaN, infinite or outside [0, 1] (a diverged model) is an error, never ranked as
a score: ``InvalidProbabilities`` names how many and which images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# Every metric weighted_metrics computes, at each level; a new metric is one more entry here and its
# formula in weighted_metrics (the report's columns: report.tables.REPORT_METRICS).
METRIC_KEYS = ("accuracy", "auroc", "kappa", "sensitivity", "specificity", "f1")
LEVELS = ("study", "image")
_EXAMPLES = 5  # offending images named in an error


# ----------------------------------------------------------------------------- inputs


class InvalidProbabilities(ValueError):
    """Probabilities that are not numbers in [0, 1] (a diverged model's NaN): metrics of them would be
    numbers that mean nothing (a NaN ranks as the highest score), so none are computed."""


def check_probabilities(probabilities, ids: Sequence | None = None, source: str | None = None) -> np.ndarray:
    """``probabilities`` as floats; raises InvalidProbabilities naming how many are NaN, infinite or
    outside [0, 1], the first few by ``ids`` (default: their positions) and ``source`` (run or file)."""
    values = np.asarray(probabilities, dtype=float)
    bad = ~((values >= 0) & (values <= 1))  # NaN fails both comparisons
    if not bad.any():
        return values
    positions = np.flatnonzero(bad)
    kinds = {
        "NaN": int(np.isnan(values).sum()),
        "infinite": int(np.isinf(values).sum()),
        "outside [0, 1]": int((np.isfinite(values) & bad).sum()),
    }
    names = [f"position {i}" for i in positions[:_EXAMPLES]] if ids is None else list(np.asarray(ids)[positions])
    examples = ", ".join(f"{name} ({values[i]:g})" for name, i in zip(names[:_EXAMPLES], positions))
    more = f" and {len(positions) - _EXAMPLES} more" if len(positions) > _EXAMPLES else ""
    raise InvalidProbabilities(
        f"{source + ': ' if source else ''}{len(positions)} of {len(values)} probabilities are not numbers in "
        f"[0, 1] ({', '.join(f'{count} {kind}' for kind, count in kinds.items() if count)}; a diverged model?): "
        f"{examples}{more}. No metric is computed from them."
    )


def check_predictions(predictions: pd.DataFrame, source: str | None = None) -> pd.DataFrame:
    """A predictions table whose ``probability`` column passes ``check_probabilities``, images named
    by ``path`` (else ``study``); returned unchanged."""
    if "probability" in predictions:
        id_column = next((name for name in ("path", "study") if name in predictions), None)
        ids = predictions[id_column].astype(str).to_numpy() if id_column else predictions.index.astype(str).to_numpy()
        check_probabilities(predictions["probability"], ids, source)
    return predictions


# ----------------------------------------------------------------------------- metrics


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``weights`` (resamples x units) by the rank formula, ties counted half."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    weights = np.atleast_2d(weights)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    sorted_weights = weights[:, order]
    positive = labels[order] == 1
    positives = np.add.reduceat(sorted_weights * positive, starts, axis=1)  # per distinct score
    negatives = np.add.reduceat(sorted_weights * ~positive, starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    wins = (positives * (below + 0.5 * negatives)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)


def weighted_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Every metric of METRIC_KEYS for each row of ``weights`` (resamples x units; None: one row of 1s)."""
    labels = np.asarray(labels, dtype=int)
    probabilities = check_probabilities(probabilities)
    weights = np.ones((1, len(labels))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    predicted = probabilities >= threshold
    positive = labels == 1
    tp = weights @ (positive & predicted)
    fp = weights @ (~positive & predicted)
    fn = weights @ (positive & ~predicted)
    tn = weights @ (~positive & ~predicted)
    total = tp + fp + fn + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = (tp + tn) / total
        expected = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / total**2
        kappa = np.where(1 - expected > 1e-12, (observed - expected) / (1 - expected), 0.0)
        return {
            "accuracy": observed,
            "auroc": weighted_auroc(labels, probabilities, weights),
            "kappa": kappa,
            "sensitivity": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
            "specificity": np.where(tn + fp > 0, tn / (tn + fp), np.nan),
            "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
        }


def point_metrics(labels, probabilities, threshold: float = 0.5, source: str | None = None) -> dict[str, float | None]:
    """The metrics of one sample as plain floats; an undefined one (AUROC with one class) is None.
    Probabilities that are not numbers in [0, 1] raise InvalidProbabilities (naming ``source``)."""
    check_probabilities(probabilities, source=source)
    values = weighted_metrics(labels, probabilities, threshold)
    return {key: (None if np.isnan(value[0]) else float(value[0])) for key, value in values.items()}


# ----------------------------------------------------------------------------- studies


def study_probability(predictions: pd.DataFrame) -> pd.Series:
    """Each study's probability, indexed by study (sorted): the mean of its images' probabilities,
    MURA's definition. The one place it is computed: every study table, study prediction and
    gallery takes it from here."""
    return predictions.groupby("study", sort=True)["probability"].mean()


def image_study_probability(predictions: pd.DataFrame) -> pd.Series:
    """``study_probability`` of each image's study, one value per row of ``predictions``."""
    return predictions["study"].map(study_probability(predictions))


def study_table(
    predictions: pd.DataFrame, keep: Sequence[str] = ("body_part", "patient"), source: str | None = None
) -> pd.DataFrame:
    """One row per study (sorted): its label, the ``keep`` columns present, its ``study_probability``
    and its number of images. An image probability that is not a number in [0, 1] raises
    InvalidProbabilities naming it (and ``source``)."""
    check_predictions(predictions, source)
    columns = {"label": ("label", "first")}
    columns |= {name: (name, "first") for name in keep if name in predictions}
    columns |= {"images": ("probability", "size")}
    table = predictions.groupby("study", sort=True).agg(**columns)
    table.insert(len(table.columns) - 1, "probability", study_probability(predictions))
    return table.reset_index()


def study_scores(predictions: pd.DataFrame, cluster: str = "patient") -> pd.DataFrame:
    """``study_table`` with the resampling unit of each study (its patient) as column ``cluster``."""
    return study_table(predictions, keep=(cluster,)).rename(columns={cluster: "cluster"})
