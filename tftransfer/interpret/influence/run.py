"""The ``influence`` analysis of fine-tuned runs (Koh & Liang, 2017): scores, match rates
and figures for several runs.

The math (the head problem, its Hessian, the sign convention) is ``interpret.influence.math``; loading
a run is ``interpret.influence.trained_runs``; ranking and match rates ``interpret.influence.ranking``; figures
``interpret.influence.plots``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tftransfer import runs
from tftransfer.config import InfluenceConfig
from tftransfer.interpret.influence.math import (Influence, compute_influence, objective_gradient,
                                      with_bias_column)
from tftransfer.interpret.influence.plots import plot_match_rates, plot_most_influential, save
from tftransfer.interpret.influence.ranking import chance_match_rate, match_rates, ranking_scores
from tftransfer.interpret.influence.trained_runs import RunData, load_run

# Above this norm of the training objective's gradient, the head is reported as unconverged.
_STATIONARY_NORM = 1e-2


@dataclass(frozen=True)
class RunAnalysis:
    """Influence scores and match rates of one run."""

    run: RunData
    influence: Influence
    rates: pd.DataFrame        # model, targets (test|train), k, match_rate, ...
    summary: dict


def analyze_run(run: RunData, top_k: int = 100, damping: float = 0.01, method: str = "auto",
                rank: str = "helpful") -> RunAnalysis:
    """Influence matrices and the Figure-6 match rates of one loaded run."""
    train_x, train_y = run.hessian_features[:run.n_train], run.train_labels[:run.n_train]
    influence = compute_influence(run.head, run.hessian_features, train_x, train_y,
                                  run.test_features, run.test_labels, damping, method)
    frames = []
    for targets, matrix, labels, exclude in (
            ("test", influence.on_test, run.test_labels, False),
            ("train", influence.on_train, train_y, True)):
        if exclude and run.n_train < 2:
            continue  # one training image has no other image to be influenced by
        frame = match_rates(ranking_scores(matrix, rank), train_y, labels, top_k, exclude)
        frames.append(frame.assign(model=run.name, targets=targets,
                                   chance=chance_match_rate(train_y, labels)))
    rates = pd.concat(frames, ignore_index=True)[
        ["model", "targets", "k", "match_rate", "cumulative_match_rate", "n_targets", "chance"]]
    stationarity = float(np.linalg.norm(
        objective_gradient(run.head, run.hessian_features, run.train_labels)))
    notes = list(run.notes)
    if stationarity > _STATIONARY_NORM:
        # Koh & Liang's derivation assumes theta minimizes the objective; SGD stops short.
        notes.append(f"the head is not at the minimum of its training objective (gradient "
                     f"norm {stationarity:.2g}): the scores are a local approximation")
    summary = {
        "model": run.name, "run_dir": run.run_dir, "target": run.target.name,
        "l2": run.head.l2, "damping": damping, **influence.info,
        "hessian_images": len(run.hessian_features),
        "train_images": run.n_train, "test_images": len(run.test_labels),
        "objective_gradient_norm": stationarity,
        "test_accuracy_head": float(np.mean(np.argmax(
            with_bias_column(run.test_features) @ run.head.theta, 1) == run.test_labels)),
        "notes": notes}
    for targets in ("test", "train"):
        part = rates[rates["targets"] == targets]
        if len(part):
            summary[f"match_rate_{targets}_k1"] = float(part["match_rate"].iloc[0])
            summary[f"match_rate_{targets}_top10"] = float(
                part["cumulative_match_rate"].iloc[min(10, len(part)) - 1])
    return RunAnalysis(run=run, influence=influence, rates=rates, summary=summary)


def analyze(cfg: InfluenceConfig) -> dict:
    """The ``influence`` command: scores, match rates and figures for several runs.

    Writes ``influence_<model>.npy`` (M x N, I_up,loss; unless ``cfg.save_matrices`` is
    off), ``match_rates.csv``, ``match_rates.png``, ``most_influential.png`` and
    ``summary.json`` into ``cfg.out``.

    Args:
      cfg: the runs and the analysis' settings.

    Returns:
      ``{"out", "files", "models": [per-run summaries]}``.
    """
    rank = cfg.rank
    names = _unique_names(cfg.run_dirs, cfg.names)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    analyses, files = [], []
    for run_dir, name in zip(cfg.run_dirs, names):
        run = load_run(run_dir, cfg.train_images, cfg.test_images, cfg.data_dir, cfg.download,
                       name)
        analysis = analyze_run(run, cfg.top_k, cfg.damping, cfg.method, rank)
        summary = analysis.summary
        how = "exact Hessian" if summary["method"] == "exact" else "Hessian-vector products + CG"
        print(f"influence: {name}: {how}, {summary['solved_params']} rows "
              f"(head: {summary['head_params']} parameters); match rate at k=1: test images "
              f"{summary['match_rate_test_k1']:.3f}", file=sys.stderr)
        if cfg.save_matrices:
            path = out_dir / f"influence_{name}.npy"
            np.save(path, analysis.influence.on_test)
            files.append(path)
        analyses.append(analysis)
    rates = pd.concat([a.rates for a in analyses], ignore_index=True)
    runs.write_text_atomic(out_dir / "match_rates.csv", rates.to_csv(index=False))
    files.append(out_dir / "match_rates.csv")
    files.append(save(plot_match_rates(rates, rank), out_dir / "match_rates.png"))
    files.append(save(plot_most_influential(analyses, cfg.grid_rows, rank),
                       out_dir / "most_influential.png"))
    summaries = [dict(a.summary, rank=rank) for a in analyses]
    runs.write_json(out_dir / "summary.json", {"sign_convention": SIGN_CONVENTION,
                                               "models": summaries})
    files.append(out_dir / "summary.json")
    return {"out": str(out_dir), "files": [str(f) for f in files], "models": summaries}


SIGN_CONVENTION = ("influence_<model>.npy holds I = -grad L(test)^T H^-1 grad L(train) "
                   "(Koh & Liang's I_up,loss), rows = test images, columns = training images; "
                   "I < 0 means helpful (removing the image raises the test loss by about -I/n). "
                   "'Most influential' = most helpful = largest -I (--rank absolute: largest |I|).")


def _unique_names(run_dirs, names) -> list[str]:
    """File-name-safe labels of the runs (``names`` or the directory names), made unique."""
    raw = names or [Path(str(d).rstrip("/")).name or "model" for d in run_dirs]
    slugs, seen = [], {}
    for name in raw:
        slug = runs.slug(name, fallback="model")
        seen[slug] = seen.get(slug, 0) + 1
        slugs.append(slug if seen[slug] == 1 else f"{slug}_{seen[slug]}")
    return slugs
