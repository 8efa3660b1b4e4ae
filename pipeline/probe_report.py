"""The report's "Why does the CNN win?" section: each probe as a table, a figure and a claim that held or not.

Every verdict here is computed from per-seed numbers with t-intervals over seeds; nothing is hard-coded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.errors import ConvbenchError
from pipeline.params import Params, ProbeName
from pipeline.render import Figure, Paragraph, Section, Table
from pipeline.stats import Interval, t_interval

LABELS = {"cnn": "CNN", "mlp": "MLP"}


def load_probes(params: Params, dataset_sha256: str) -> dict[str, pd.DataFrame]:
    """Every probe result that matches the current params and data.

    Probes in probes.run must exist and match (DVC ran them); others, run by hand with `convbench sweep`,
    are shown when their fingerprint matches and silently left out when they are stale.
    """
    from pipeline.probes import fingerprint

    frames = {}
    for name in get_args(ProbeName):
        path = paths.probe(name)
        required = name in params.probes.run
        if not path.is_file():
            if required:
                raise ConvbenchError(f"{path} is missing; run `convbench sweep --probe {name}` (or `dvc repro`)")
            continue
        content = json.loads(path.read_text())
        if content.get("fingerprint") != fingerprint(params, name, dataset_sha256):
            if required:
                raise ConvbenchError(f"{path} was made with other params or data; run `convbench sweep --probe {name}`"
                                     " (or `dvc repro`)")
            continue
        frames[name] = pd.DataFrame(content["rows"])
    return frames


@dataclass(frozen=True)
class Claim:
    """One textbook claim about CNNs and whether this run's numbers support it."""

    claim: str
    held: str  # "held", "did not hold", "partly held" or "not tested"
    evidence: str


def _interval_text(interval: Interval, scale: float = 100.0) -> str:
    if interval.n < 2:
        return f"{interval.mean * scale:+.2f}"
    return f"{interval.mean * scale:+.2f} [{interval.low * scale:+.2f}, {interval.high * scale:+.2f}]"


def _accuracy_text(interval: Interval) -> str:
    if interval.n < 2:
        return f"{interval.mean:.4f}"
    return f"{interval.mean:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def advantage_by_setting(rows: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Per setting: each model's accuracy interval and the CNN's advantage (paired by seed) as an interval."""
    out = []
    for (setting, value), frame in rows.groupby(["setting", "value"], sort=False):
        by_model = {m: frame[frame["model"] == m].set_index("seed")["test_accuracy"] for m in ("cnn", "mlp")}
        seeds = sorted(set(by_model["cnn"].index) & set(by_model["mlp"].index))
        gap = [by_model["cnn"][s] - by_model["mlp"][s] for s in seeds]
        params = {m: int(frame.loc[frame["model"] == m, "params"].iloc[0]) for m in ("cnn", "mlp")}
        out.append({"setting": setting, "value": value, "params_cnn": params["cnn"], "params_mlp": params["mlp"],
                    "cnn": t_interval(by_model["cnn"].to_numpy(), confidence),
                    "mlp": t_interval(by_model["mlp"].to_numpy(), confidence),
                    "advantage": t_interval(gap, confidence)})
    return pd.DataFrame(out)


def _advantage_table(table: pd.DataFrame, setting_header: str, with_params: bool = False) -> Table:
    frame = pd.DataFrame({setting_header: table["setting"].tolist()})
    if with_params:
        frame["Parameters (CNN / MLP)"] = [f"{c:,} / {m:,}" for c, m in zip(table["params_cnn"], table["params_mlp"])]
    frame["CNN accuracy"] = [_accuracy_text(i) for i in table["cnn"]]
    frame["MLP accuracy"] = [_accuracy_text(i) for i in table["mlp"]]
    frame["CNN − MLP (points)"] = [_interval_text(i) for i in table["advantage"]]
    align = ("left", "right", "right", "right", "right") if with_params else ("left", "right", "right", "right")
    return Table(frame, align)


def robustness_table(metrics: pd.DataFrame, kind: str, confidence: float) -> pd.DataFrame:
    """Accuracy per model at each shift or noise level, with the CNN's advantage paired by seed."""
    prefix = f"robustness.{kind}."
    rows = []
    for column in [c for c in metrics.columns if c.startswith(prefix)]:
        level = column.removeprefix(prefix)
        for _, row in metrics.iterrows():
            rows.append({"setting": level, "value": float(level), "model": row["model"], "seed": row["seed"],
                         "params": row["params"], "test_accuracy": row[column]})
    return advantage_by_setting(pd.DataFrame(rows), confidence) if rows else pd.DataFrame()


def _drop_claim(table: pd.DataFrame, claim: str, what: str) -> Claim:
    """Compare each model's accuracy drop from the first to the last level of a robustness table."""
    first, last = table.iloc[0], table.iloc[-1]
    drops = {m: first[m].mean - last[m].mean for m in ("cnn", "mlp")}
    change = last["advantage"].mean - first["advantage"].mean
    held = "held" if drops["cnn"] < drops["mlp"] and last["advantage"].low > first["advantage"].mean else (
        "partly held" if drops["cnn"] < drops["mlp"] else "did not hold")
    evidence = (f"at {what} {last['setting']} the CNN loses {drops['cnn'] * 100:.1f} points and the MLP "
                f"{drops['mlp'] * 100:.1f}; the CNN's lead moves by {change * 100:+.1f} points")
    return Claim(claim, held, evidence)


def permutation_claim(table: pd.DataFrame) -> Claim:
    """Does shuffling the pixels (which an MLP cannot notice) take away the CNN's advantage?"""
    original = table[table["setting"] == "original"].iloc[0]["advantage"]
    permuted = table[table["setting"] == "permuted"].iloc[0]["advantage"]
    owed = original.mean - permuted.mean
    share = owed / original.mean if original.mean > 0 else float("nan")
    if original.mean <= 0:
        held = "not tested"
    elif permuted.mean <= 0 or (permuted.n > 1 and permuted.low <= 0):
        held = "held"
    elif owed > 0:
        held = "partly held"
    else:
        held = "did not hold"
    evidence = (f"CNN − MLP is {_interval_text(original)} points on the original images and {_interval_text(permuted)} "
                f"on permuted ones: {owed * 100:+.2f} points"
                + (f" ({share:.0%} of the advantage)" if np.isfinite(share) else "") + " are owed to spatial structure")
    return Claim("The CNN's advantage comes from spatial structure (pixel permutation control)", held, evidence)


def fraction_claim(table: pd.DataFrame) -> Claim:
    """Is the CNN's lead larger with less data?"""
    ordered = table.sort_values("value")
    small, full = ordered.iloc[0], ordered.iloc[-1]
    held = "held" if small["advantage"].mean > full["advantage"].mean else "did not hold"
    evidence = (f"CNN − MLP is {_interval_text(small['advantage'])} points with {small['setting']} of the training "
                f"set and {_interval_text(full['advantage'])} with {full['setting']}")
    return Claim("CNNs are more data-efficient", held, evidence)


def size_claim(table: pd.DataFrame) -> Claim:
    """At every matched parameter budget, does the CNN win?"""
    wins = sum(1 for interval in table["advantage"] if interval.mean > 0)
    significant = sum(1 for interval in table["advantage"] if interval.n > 1 and interval.low > 0)
    held = "held" if wins == len(table) else ("partly held" if wins else "did not hold")
    evidence = (f"the CNN is ahead at {wins} of {len(table)} sizes ({significant} with an interval above zero), "
                f"from {table['params_cnn'].min():,} to {table['params_cnn'].max():,} parameters")
    return Claim("At an equal parameter budget the CNN wins", held, evidence)


def probe_section(metrics: pd.DataFrame, probes: dict[str, pd.DataFrame], confidence: float,
                  figures: dict[str, Path]) -> Section:
    """The report section with every probe that ran, and the claims it tested."""
    level = f"{confidence:.0%}"
    blocks: list = [Paragraph(
        f"Textbooks say CNNs win on images because of local filters, weight sharing and translation "
        f"equivariance. These probes test that on this dataset. Intervals are {level} t-intervals over seeds; "
        f"the CNN's advantage is paired by seed."
    )]
    claims: list[Claim] = []
    shifts, noise = robustness_table(metrics, "shift", confidence), robustness_table(metrics, "noise", confidence)
    if len(shifts) > 1:
        claims.append(_drop_claim(shifts, "CNNs are more robust to translation", "shift"))
        blocks += [Paragraph("**Translation.** Test images moved by k pixels (zero fill), averaged over directions."),
                   _advantage_table(shifts, "Shift (pixels)")]
    if len(noise) > 1:
        claims.append(_drop_claim(noise, "CNNs are more robust to pixel noise", "noise std"))
        blocks += [Paragraph("**Noise.** Additive Gaussian noise, std in units of the pixel range."),
                   _advantage_table(noise, "Noise std")]
    if "robustness" in figures:
        blocks.append(Figure(figures["robustness"], "Accuracy under translation and noise (mean over seeds, CI bars)."))
    if "permutation" in probes:
        table = advantage_by_setting(probes["permutation"], confidence)
        claims.append(permutation_claim(table))
        blocks += [Paragraph("**Pixel permutation.** Both models retrained on images whose pixels are shuffled by one "
                             "fixed permutation. An MLP cannot tell; a CNN loses its locality."),
                   _advantage_table(table, "Images")]
    if "fraction" in probes:
        table = advantage_by_setting(probes["fraction"], confidence).sort_values("value")
        claims.append(fraction_claim(table))
        blocks += [Paragraph("**Data efficiency.** Both models retrained on a stratified share of the training split."),
                   _advantage_table(table, "Training share")]
        if "fraction" in figures:
            blocks.append(Figure(figures["fraction"], "Accuracy against the share of training data."))
    if "size" in probes:
        table = advantage_by_setting(probes["size"], confidence).sort_values("value")
        claims.append(size_claim(table))
        blocks += [Paragraph("**Size sweep.** CNN channels and hidden widths scaled; the MLP re-matched at each size."),
                   _advantage_table(table, "CNN scale", with_params=True)]
    if claims:
        summary = pd.DataFrame({"Claim": [c.claim for c in claims],
                                "Verdict here": [f"**{c.held}**" for c in claims],
                                "Evidence": [c.evidence for c in claims]})
        blocks.insert(1, Table(summary, ("left", "left", "left")))
    return Section("Why does the CNN win? Probes", blocks)


def robustness_points(metrics: pd.DataFrame, kind: str, confidence: float) -> pd.DataFrame:
    """Long table (model, level, mean, low, high) for the robustness figure."""
    table = robustness_table(metrics, kind, confidence)
    rows = []
    for _, row in table.iterrows():
        for model in ("cnn", "mlp"):
            interval = row[model]
            rows.append({"model": model, "level": row["value"], "mean": interval.mean, "low": interval.low,
                         "high": interval.high})
    return pd.DataFrame(rows)
