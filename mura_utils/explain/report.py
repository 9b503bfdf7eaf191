"""The method table (markdown + csv), the galleries (best hits and worst misses with the fracture
boxes drawn; every method on the same images) and ``localization_section`` for the report and
notebook 06."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mura_utils.explain.boxes import FractureAnnotation
from mura_utils.explain.localization import BASELINES, POINTING_TOLERANCE
from mura_utils.explain.names import CAM_METHOD_LABELS
from mura_utils.report.figures import _figure, _save, _styled
from mura_utils.utils.formatting import markdown_table

LABELS = {**CAM_METHOD_LABELS, "centre": "baseline: image centre", "flat": "baseline: flat map"}
COLUMNS = {  # score -> (column title of the markdown table, decimals)
    "pointing": ("Pointing game", 2),
    "pointing_tol15": ("Pointing game (15 px)", 2),
    "box_mass_ratio": ("Box mass ratio", 2),
    "polygon_mass_ratio": ("Polygon mass ratio", 2),
    "road_combined": ("ROAD (higher: more faithful)", 3),
}


def label(method: str) -> str:
    return LABELS.get(method, method)


def methods_table(
    summary: dict, methods: Sequence[str], references: Sequence[str] = ("gradcam", "centre")
) -> pd.DataFrame:
    """One row per method (then the baselines): each score's mean and interval, and its paired
    difference to each of ``references`` (interval, p) on the same image resamples; the first
    reference is the method the markdown table compares with."""
    rows = []
    for method in methods:
        row: dict = {"method": method, "kind": "baseline" if method in BASELINES else "cam"}
        for score, entry in summary.get(method, {}).items():
            row["images"] = max(row.get("images", 0), entry["n"])
            row[score], (row[f"{score}_ci_low"], row[f"{score}_ci_high"]) = entry["mean"], entry["ci"]
            for reference in references:
                difference = entry.get(f"minus_{reference}")
                if difference is None:
                    continue
                name = f"{score}_minus_{reference}"
                row[name], (row[f"{name}_ci_low"], row[f"{name}_ci_high"]) = difference["delta"], difference["ci"]
                row[f"{name}_p"] = difference["p"]
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(row: pd.Series, name: str, digits: int = 2) -> str:
    value = row.get(name)
    if value is None or pd.isna(value):
        return "—"
    low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    sign = "+" if "_minus_" in name else ""
    text = f"{value:{sign}.{digits}f}"
    if low is not None and not pd.isna(low):
        text += f" [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"
    p = row.get(f"{name}_p")
    return text + (f", p={p:.3f}" if p is not None and not pd.isna(p) else "")


def methods_markdown(table: pd.DataFrame, result: dict) -> str:
    """The table as markdown: mean [95% CI] per score and, for each CAM method, its paired difference
    to the reference method (Δ), with a few lines on what was measured."""
    reference = result["reference"]
    scores = [score for score in COLUMNS if score in table]
    header = ["Method", *[title for score in scores for title in (COLUMNS[score][0], f"Δ vs {label(reference)}")]]
    rows = [
        [
            label(row["method"]),
            *[_cell(row, name, COLUMNS[s][1]) for s in scores for name in (s, f"{s}_minus_{reference}")],
        ]
        for _, row in table.iterrows()
    ]
    bootstrap, road = result["bootstrap"], result["road"]
    lines = [
        f"Localization of fractures by CAM methods: {result['model_name']} ({result['img_size']} px), "
        f"{result['images']} {result.get('positive_label') or 'positive'} {result['split']} images of "
        f"{result.get('dataset') or result['data_root']}.",
        "",
        markdown_table(header, rows, right=[False] + [True] * (len(header) - 1)),
        f"Mean over images [{bootstrap['level']:.0%} interval, {bootstrap['resamples']} bootstrap resamples of "
        f"images, seed {bootstrap['seed']}]; Δ: paired difference to {label(reference)} on the same resamples "
        "(p: two-sided bootstrap p-value).",
        *_centre_table(table),
        "- Pointing game: share of images whose heatmap maximum (mapped back to the image's own pixels) lies in a "
        "fracture box; the centre baseline points at the image centre, the flat map scores the boxes' area share.",
    ]
    if "pointing_tol15" in table:
        lines.append(
            f"- Pointing game (15 px): the same with the game's standard tolerance (Zhang et al. 2016): a hit when the "
            f"maximum lies closer than {POINTING_TOLERANCE} px to a box, in pixels of the radiograph at its "
            "original size (the size the annotations list; a reduced copy's pixels count as the pixels they span)."
        )
    lines.append(
        "- Mass ratio: share of the heatmap's mass inside the boxes (polygons) / their share of the image area; "
        "1 = no better than a flat map."
    )
    if road["images"]:
        lines.append(
            f"- ROAD ({road['images']} images, pixels kept {road['percentiles']} %): "
            "(LeRF - MoRF) / 2 change of the fracture probability when pixels are removed by the map "
            "(noisy linear imputation); higher = the map's pixels drive the prediction more; ~0 = a random map."
        )
    if result["skipped"]:
        lines.append(f"- Left out: {len(result['skipped'])} image(s) whose file does not match its annotation size.")
    if result["unannotated"]:
        lines.append(f"- {len(result['unannotated'])} positive test image(s) have no annotation and are not scored.")
    return "\n".join(lines) + "\n"


def _centre_table(table: pd.DataFrame) -> list[str]:
    """The pointing games' paired differences to the centre baseline (a map that knows nothing of the
    image), one row per method but the centre itself; nothing for a table without them."""
    scores = [score for score in ("pointing", "pointing_tol15") if f"{score}_minus_centre" in table]
    if not scores:
        return []
    header = ["Method", *[f"{COLUMNS[score][0]}, Δ vs image centre" for score in scores]]
    rows = [
        [label(row["method"]), *[_cell(row, f"{score}_minus_centre") for score in scores]]
        for _, row in table.iterrows()
        if row["method"] != "centre"
    ]
    note = "Paired difference to the image centre on the same resamples: above 0, the maps point better than it."
    return ["", markdown_table(header, rows, right=[False] + [True] * len(scores)), note, ""]


def gallery_choice(per_image: pd.DataFrame, method: str, per_group: int = 4) -> pd.DataFrame:
    """``method``'s best hits (maximum in a box, highest box mass ratio first) and worst misses
    (maximum outside every box, lowest ratio first), ``per_group`` each; column ``group`` hit/miss."""
    rows = per_image[per_image["method"] == method]
    hits = rows[rows["pointing"] == 1].sort_values(["box_mass_ratio", "image"], ascending=[False, True])
    misses = rows[rows["pointing"] == 0].sort_values(["box_mass_ratio", "image"], ascending=[True, True])
    return pd.concat(
        [hits.head(per_group).assign(group="hit"), misses.head(per_group).assign(group="miss")], ignore_index=True
    )


def _draw(axes, gray: np.ndarray, heatmap: np.ndarray, annotation: FractureAnnotation, title: str) -> None:
    from matplotlib.patches import Polygon, Rectangle

    from mura_utils.explain.cam import overlay

    axes.imshow(overlay(gray, heatmap))
    for x, y, w, h in annotation.boxes:
        axes.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="white", linewidth=1.2))
    for polygon in annotation.polygons:
        axes.add_patch(Polygon(polygon, closed=True, fill=False, edgecolor="cyan", linewidth=0.6, linestyle="--"))
    peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    axes.plot(peak[1], peak[0], marker="+", color="white", markersize=9, markeredgewidth=1.5)
    axes.set_title(title, fontsize=7)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.grid(False)


def _blank(axes, text: str = "") -> None:
    axes.axis("off")
    if text:
        axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="0.4", transform=axes.transAxes)


@_styled
def plot_gallery(items: Sequence[dict], path: str | Path, method: str, per_group: int) -> Path:
    """Rows "best hits" and "worst misses": each item {group, gray, heatmap, annotation, caption}."""
    columns = max(per_group, 1)
    figure = _figure(2.2 * columns + 0.8, 2.9 * 2 + 0.9)
    grid = figure.subplots(2, columns, squeeze=False)
    for row, (group, row_label) in enumerate((("hit", "Best hits"), ("miss", "Worst misses"))):
        chosen = [item for item in items if item["group"] == group]
        for column in range(columns):
            if column >= len(chosen):
                _blank(grid[row, column], "none" if column == 0 else "")
                continue
            item = chosen[column]
            _draw(grid[row, column], item["gray"], item["heatmap"], item["annotation"], item["caption"])
        grid[row, 0].set_ylabel(row_label, fontsize=10, fontweight="bold")
    figure.suptitle(f"{label(method)}: best hits and worst misses on fracture boxes", fontsize=10)
    figure.supxlabel(
        "white boxes: annotated fractures (cyan dashes: polygons); +: the map's maximum; hit = maximum inside a box\n"
        f"a miss 'within {POINTING_TOLERANCE} px' is a hit of the tolerant pointing game",
        fontsize=8,
        color="0.3",
    )
    return _save(figure, path)


def _verdict(hit: float, near: float) -> str:
    """'hit' (maximum in a box), 'hit at 15 px' (only within the tolerance) or 'miss'."""
    return "hit" if hit == 1 else f"hit at {POINTING_TOLERANCE} px" if near == 1 else "miss"


@_styled
def plot_methods(items: Sequence[dict], methods: Sequence[str], path: str | Path, subtitle: str = "") -> Path:
    """One row per image, one column per method: items {gray, annotation, caption, maps: {method: map},
    scores: {method: (pointing, pointing within 15 px, box mass ratio)}}."""
    figure = _figure(2.0 * len(methods) + 0.6, 2.5 * max(len(items), 1) + 0.7)
    grid = figure.subplots(max(len(items), 1), len(methods), squeeze=False)
    for row, item in enumerate(items):
        for column, method in enumerate(methods):
            hit, near, ratio = item["scores"][method]
            title = f"{label(method)}: {_verdict(hit, near)}, ratio {ratio:.1f}"
            _draw(grid[row, column], item["gray"], item["maps"][method], item["annotation"], title)
        grid[row, 0].set_ylabel(item["caption"], fontsize=8)
    if not items:
        _blank(grid[0, 0], "no images")
    figure.suptitle(f"CAM methods on the same fractured images ({subtitle})", fontsize=10)
    return _save(figure, path)


def _gallery_caption(case: pd.Series) -> str:
    """File name, probability, mass ratio and, for a miss that the tolerant pointing game counts, so."""
    near = case["group"] == "miss" and case.get("pointing_tol15") == 1
    return f"{case['image']}\nP(positive) {case['probability']:.2f} · mass ratio {case['box_mass_ratio']:.1f}" + (
        f" · within {POINTING_TOLERANCE} px" if near else ""
    )


def write_figures(
    explainer,
    per_image: pd.DataFrame,
    annotations: dict[str, FractureAnnotation],
    out: Path,
    method: str,
    methods: Sequence[str],
    per_group: int = 4,
) -> dict[str, str]:
    """gallery.png (``method``'s best hits and worst misses) and methods.png (every method on the
    gallery's two best hits and its worst miss) in ``out``; returns their file names."""
    from mura_utils.data.imaging import read_grayscale

    chosen = gallery_choice(per_image, method, per_group)
    paths = dict(zip(per_image["image"], per_image["path"]))
    grays = {image: read_grayscale(paths[image]) for image in chosen["image"]}
    scaled = {image: annotations[image].scaled(gray.shape[1], gray.shape[0]) for image, gray in grays.items()}
    maps = {m: dict(zip(grays, explainer.image_maps(list(grays.values()), m))) if grays else {} for m in methods}
    items = [
        {
            "group": case["group"],
            "gray": grays[case["image"]],
            "heatmap": maps[method][case["image"]],
            "annotation": scaled[case["image"]],
            "caption": _gallery_caption(case),
        }
        for _, case in chosen.iterrows()
    ]
    plot_gallery(items, out / "gallery.png", method, per_group)
    strip = [*chosen[chosen["group"] == "hit"]["image"].head(2), *chosen[chosen["group"] == "miss"]["image"].head(1)]
    scores = per_image.set_index(["image", "method"])
    strip_items = [
        {
            "gray": grays[image],
            "annotation": scaled[image],
            "caption": image,
            "maps": {m: maps[m][image] for m in methods},
            "scores": {
                m: tuple(scores.loc[(image, m), ["pointing", "pointing_tol15", "box_mass_ratio"]]) for m in methods
            },
        }
        for image in strip
    ]
    plot_methods(strip_items, methods, out / "methods.png", f"{label(method)}'s two best hits and worst miss")
    return {"gallery": "gallery.png", "methods": "methods.png"}


def localization_section(
    explain_dir: str | Path, relative_to: str | Path | None = None, heading: str = "##"
) -> tuple[str, list[Path]]:
    """Markdown for a report: the method table of a ``mura explain`` folder and its two figures
    (links relative to ``relative_to``, e.g. the report's folder), and the figure paths."""
    explain_dir = Path(explain_dir)
    result_file = explain_dir / "localization.json"
    if not result_file.is_file():
        raise FileNotFoundError(f"{result_file}: not found; run `mura explain` first")
    result = json.loads(result_file.read_text())
    table = pd.read_csv(explain_dir / "methods.csv")
    figures = [explain_dir / name for name in result.get("figures", {}).values()]
    base = Path(relative_to) if relative_to is not None else explain_dir

    def link(path: Path) -> str:
        try:
            return Path(path).resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            return Path(path).resolve().as_posix()

    best, best_tolerant = _best_method(result), _best_method(result, "pointing_tol15")
    parts = [
        f"{heading} Do the heatmaps point at the fracture?",
        "",
        methods_markdown(table, result),
        f"Best pointing game among the CAM methods: **{label(best)}**." if best else "",
        *([f"With the {POINTING_TOLERANCE} px tolerance: **{label(best_tolerant)}**."] if best_tolerant else []),
        "",
    ]
    parts += [f"![{path.stem}]({link(path)})" for path in figures if path.is_file()]
    return "\n".join(parts).rstrip() + "\n", [path for path in figures if path.is_file()]


def _best_method(result: dict, score: str = "pointing") -> str | None:
    """The CAM method with the highest mean ``score`` (a pointing game; ties: the higher box mass
    ratio); None when no method has it (a folder written before the tolerant game was scored)."""
    summary = result.get("summary", {})
    candidates = [m for m in result.get("methods", []) if score in summary.get(m, {})]
    if not candidates:
        return None
    return max(candidates, key=lambda m: (summary[m][score]["mean"], summary[m]["box_mass_ratio"]["mean"]))
