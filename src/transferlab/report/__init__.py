"""Report: tidy CSV tables, PNG figures and a self-contained ``report.html``, rebuilt from the store alone."""

from __future__ import annotations

import base64
import html
import json
import zipfile
from pathlib import Path

import numpy as np
import yaml

from transferlab.errors import DataError
from transferlab.experiments.store import run_path
from transferlab.report import figures
from transferlab.report.tables import (CORRELATION_COLUMNS, METRIC_COLUMNS, RESULT_COLUMNS, correlations, mean_by,
                                       read_run, transfer_pairs, write_csv)


def build_report(run_dir: str | Path) -> Path:
    """Write results.csv, metrics.csv, correlations.csv, figures/*.png and report.html into ``run_dir``."""
    run_dir = Path(run_dir)
    run = read_run(run_dir, need_cells=True)
    config, results, metric_rows, sweep = run.config, run.results, run.metrics, run.sweep
    cells, versions, last_run = run.cells, run.versions, run.last_run
    write_csv(run_path(run_dir, "results.csv"), results, RESULT_COLUMNS)
    write_csv(run_path(run_dir, "metrics.csv"), metric_rows, METRIC_COLUMNS)
    pairs = transfer_pairs(results, metric_rows)
    corr = correlations(pairs)
    write_csv(run_path(run_dir, "correlations.csv"), corr, CORRELATION_COLUMNS)

    fig_dir = run_path(run_dir, "figures")  # inside the run folder, not a link: the old figures deleted are ours
    fig_dir.mkdir(exist_ok=True)
    for old in fig_dir.glob("*.png"):
        old.unlink()
    made: list[tuple[str, Path]] = []
    surrogates, targets = config.get("surrogates", []), config.get("targets", [])
    fractions = config.get("surrogate_fractions", [1.0])
    budgets = sorted({r["budget"] for r in results if r["budget"] > 0})
    poisoning = config.get("kind") == "poisoning"
    attack = config.get("attack", {})
    norm = {"1": "ℓ1", "2": "ℓ2", "inf": "ℓ∞"}.get(str(attack.get("norm", "2")), "ℓ2")
    unit = ", added features" if attack.get("binary") and attack.get("feature_addition") else ""
    name, axis, tag = ("poisoning fraction", "fraction of poisoning points", "p") if poisoning else \
        ("ε", f"ε ({norm} budget{unit})", "eps")
    attacked = attack.get("attack_class")
    error_name = f"evasion rate ({attacked} called otherwise)" if attacked is not None else "error under attack"
    if any(r["setting"] == "white-box" for r in results):
        made.append((f"White-box security evaluation curves: {error_name} vs {axis}" +
                     ("" if poisoning else " (paper Fig. 5)"),
                     figures.security_curves(results, targets, fig_dir / "security_curves.png", axis,
                                             f"white-box {error_name}")))
    for budget in budgets:
        made.append((f"Transfer matrix at {name} = {budget:g} (diagonal: white-box)",
                     figures.transfer_matrices(results, surrogates, targets, fractions, budget,
                                               fig_dir / f"transfer_matrix_{tag}{budget:g}.png", name,
                                               error_name)))
    informative = _most_informative_budget(pairs, budgets) if pairs and budgets else None
    if informative is not None:
        made.append((f"Transfer rate vs S, R, V at {name} = {informative:g}",
                     figures.metric_scatter(pairs, informative, fig_dir / "metrics_vs_transfer.png", name)))
    strip = _point_strip(run_dir, config, budgets, fig_dir / "points.png")
    if strip is not None:
        made.append(strip)
    if sweep:
        made.append(("MLP weight-decay sweep (paper Fig. 3)", figures.weight_decay_sweep(sweep, fig_dir /
                                                                                         "nn_weight_decay.png")))
    detection = detection_table(results, targets) if attacked is not None else []
    if detection:
        write_csv(run_path(run_dir, "detection.csv"), detection, list(detection[0]))
    undefined = _undefined_note(metric_rows, targets, poisoning)
    path = run_path(run_dir, "report.html")
    tmp = run_path(run_dir, "report.html.tmp")
    tmp.write_text(_html(config, versions, last_run, cells, corr, made, detection, (name, informative), undefined))
    tmp.replace(path)
    return path


#: points drawn per row of the strip of crafted points
STRIP_POINTS = 8


def _point_strip(run_dir: Path, config: dict, budgets: list[float], path: Path) -> tuple[str, Path] | None:
    """For image data: the first points crafted on the first surrogate (repetition 0, all its data), clean and at
    each budget of the matrices (evasion) or as started and as poisoned at the largest fraction (poisoning)."""
    surrogates = config.get("surrogates") or []
    if not surrogates or not budgets:
        return None
    surrogate, poisoning = surrogates[0], config.get("kind") == "poisoning"
    name = f"r0_transfer_{surrogate}_f1" + (f"_p{max(budgets):g}" if poisoning else "")
    file = run_dir / "points" / f"{name}.npz"
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as npz:
            if "image_shape" not in npz:
                return None
            shape = tuple(int(v) for v in npz["image_shape"])
            if poisoning:
                chained = (config.get("attack") or {}).get("warm_start", False)
                rows = [("start" if chained else "start (label flipped)", npz["X_start"][:STRIP_POINTS]),
                        (f"poisoning point ({100 * max(budgets):g}%)", npz["X"][:STRIP_POINTS])]
                title = (f"Poisoning points crafted on {surrogate}: each starts from a training image whose label is "
                         "flipped" + (" or, the fractions chained, from a smaller attacker's point" if chained else ""))
            else:
                # the clean points are the budget-0 ones, kept when the config's budgets include 0
                rows = [("clean", npz["eps_0"][:STRIP_POINTS])] if "eps_0" in npz else []
                rows += [(f"ε = {b:g}", npz[f"eps_{b:g}"][:STRIP_POINTS]) for b in budgets
                         if f"eps_{b:g}" in npz][:5]
                if not rows:
                    return None
                title = (f"Clean and adversarial points crafted on {surrogate}" if "eps_0" in npz
                         else f"Adversarial points crafted on {surrogate}")
        if len(shape) != 2 or min(shape) < 1 or any(np.asarray(images).ndim != 2 or np.asarray(images).shape[1] !=
                                                    shape[0] * shape[1] for _, images in rows):
            raise ValueError("its points do not fit its image shape")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{file} is not a points file of this run ({exc}); delete it and resume the run to craft it "
                        "again") from None
    return title, figures.point_strip(rows, shape, path, title)


def detection_table(results: list[dict], targets: list[str]) -> list[dict]:
    """Per target: clean detection rate of the attacked class (1 − error at budget 0) and the white-box evasion
    rate at every budget, averaged over repetitions (the malware case study's summary)."""
    white = [r for r in results if r["setting"] == "white-box"]
    clean = mean_by([r for r in results if r["budget"] == 0 and r["setting"] in ("white-box", "transfer")],
                    ("target",), "error")
    evasion = mean_by(white, ("target", "budget"), "error")
    budgets = sorted({r["budget"] for r in white if r["budget"] > 0})
    rows = []
    for t in targets:
        if (t,) not in clean:
            continue
        row = {"target": t, "clean detection rate": 1 - clean[(t,)]}
        for b in budgets:
            row[f"white-box evasion ε={b:g}"] = evasion.get((t, b), float("nan"))
        rows.append(row)
    return rows


def targets_without_gradient(metric_rows: list[dict], targets: list[str]) -> list[str]:
    """The targets whose S and R are undefined in every metrics row (NaN, stored as NULL): a target without input
    gradient (evasion: a forest, a black-box saved model) or, in poisoning, without an implicit gradient."""
    def undefined(value) -> bool:
        return value is None or not np.isfinite(value)

    out = []
    for t in targets:
        rows = [r for r in metric_rows if r["target"] == t]
        if rows and all(undefined(r["S"]) and undefined(r["R"]) for r in rows):
            out.append(t)
    return out


def _undefined_note(metric_rows: list[dict], targets: list[str], poisoning: bool) -> str:
    """A paragraph naming the targets S and R are undefined for, and why (empty otherwise)."""
    names = targets_without_gradient(metric_rows, targets)
    if not names:
        return ""
    listed = ", ".join(f"<code>{html.escape(t)}</code>" for t in names)
    if poisoning:
        why = ("S and R of a poisoning target are computed from its implicit gradient (the validation loss's "
               "gradient through its training, paper Section 4), which transferlab has for the logistic, ridge and "
               "SVM families only")
    else:
        why = ("S (Eq. 17) and R (Eq. 18) are computed from the target's input gradient, and these targets have none "
               "(a forest, or a black-box model scored by itself: gradient boosting, kNN, an ONNX detector)")
    return (f"<p><b>Undefined S and R:</b> {why}. They are empty in metrics.csv and left out of the correlations "
            f"for {listed}; their transfer rates are measured all the same (results.csv, the transfer "
            "matrices).</p>")


def _most_informative_budget(pairs: list[dict], budgets: list[float]) -> float:
    """The budget whose mean transfer rate is closest to 0.5 (the scatter plots spread most there)."""
    means = {b: np.mean([p["error"] for p in pairs if p["budget"] == b]) for b in budgets}
    return min(budgets, key=lambda b: abs(means[b] - 0.5))


def _correlation_html(corr: list[dict], budget_name: str, budget: float | None) -> str:
    """Per-target statistics at the most informative ``budget`` first (the granularity at which R and V explain
    transfer), then the pooled ones with a note on why pooling misleads."""
    per_target = [c for c in corr if c["target"] != "all"]
    pooled = [c for c in corr if c["target"] == "all"]
    columns = ["budget", "metric", "n_pairs", "pearson_r", "pearson_p", "kendall_tau", "kendall_p"]
    if not per_target or budget is None:
        return _table(pooled, columns)
    shown = [c for c in per_target if c["budget"] == budget]
    return (f"<h3>Per target, across surrogates ({html.escape(budget_name)} = {budget:g}, where the mean transfer "
            "rate is closest to "
            "0.5; every budget is in correlations.csv)</h3>"
            "<p>R (Eq. 18) is a property of a surrogate–target pair and S (Eq. 17) of the target, so R is compared "
            "across the surrogates of one target: that is how the paper reads it.</p>"
            + _table(shown, ["target", *columns])
            + "<h3>Pooled over all surrogate–target pairs</h3><p>Pooling mixes targets whose gradients differ in "
              "size: a large-S target is evaded at the same alignment where a small-S one is not (the transfer "
              "loss grows as ε·S·R, Eq. 16), so a pooled correlation of R can be weak or even negative while R "
              "explains transfer well within every target. Read the per-target rows first.</p>"
            + _table(pooled, columns))


def _detection_html(config: dict, detection: list[dict] | None) -> str:
    if not detection:
        return ""
    fpr = (config.get("detector") or {}).get("fpr")
    how = f"each target's threshold set for a {100 * fpr:g}% false-positive rate" if fpr else "each target's own threshold"
    return (f"<h2>Detection and white-box evasion</h2><p>Attacked class: "
            f"{html.escape(str(config['attack']['attack_class']))}; {html.escape(how)}.</p>"
            + _table(detection, list(detection[0])))


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if not np.isfinite(v) else f"{v:.3g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(config: dict, versions: dict, last_run: dict, cells: list[dict], corr: list[dict],
          made: list[tuple[str, Path]], detection: list[dict] | None,
          informative: tuple[str, float | None], undefined: str = "") -> str:
    stage_time: dict[str, float] = {}
    for c in cells:
        stage_time[c["stage"]] = stage_time.get(c["stage"], 0.0) + c["seconds"]
    timing_rows = [{"stage": s, "cells": sum(c["stage"] == s for c in cells), "compute seconds": t}
                   for s, t in stage_time.items()]
    images = "".join(
        f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'/>" for title, p in made)
    wall = f"{last_run.get('seconds', float('nan')):.1f} s wall time in the last run" if last_run else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>transferlab report: {html.escape(
        str(config.get('name', '')))}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}}img{{max-width:100%}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
pre{{background:#f6f6f6;padding:1em;font-size:12px}}</style></head><body>
<h1>transferlab report — {html.escape(str(config.get('name', '')))}</h1>
<p>Transferability of {html.escape(str(config.get('kind', 'evasion')))} attacks after Demontis et al., <i>Why Do Adversarial Attacks Transfer?</i> (USENIX
Security 2019). Errors are averaged over {html.escape(str(config.get('repetitions', '?')))} repetition(s).
{html.escape(wall)}.</p>
{_detection_html(config, detection)}<h2>Figures</h2>{images}
<h2>Correlation of transfer rate with S, R, V (paper Table 1)</h2>
{undefined}{_correlation_html(corr, *informative)}
<h2>Timings</h2>{_table(timing_rows, ['stage', 'cells', 'compute seconds'])}
<h2>Config</h2><pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>
<h2>Versions</h2><pre>{html.escape(json.dumps(versions, indent=2))}</pre>
<p>Tables: results.csv, metrics.csv, correlations.csv next to this file.</p></body></html>"""
