"""The report's probe section: each probe as a table, a figure and the textbook claims that held or not.

Every claim compares the reference model with each other model, from per-seed numbers with t-intervals
over seeds; nothing is hard-coded and no model is named here.
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
from pipeline.params import Params, ProbeName, probe_fingerprint
from pipeline.render import Figure, Paragraph, Section, Table
from pipeline.stats import Interval, t_interval


def load_probes(params: Params, dataset_sha256: str) -> dict[str, pd.DataFrame]:
    """Every probe result that matches the current params and data.

    Probes in probes.run must exist and match (DVC ran them); others, run by hand with `convbench sweep`,
    are shown when their fingerprint matches and silently left out when they are stale.
    """
    frames = {}
    for name in get_args(ProbeName):
        path = paths.probe(name)
        required = name in params.probes.run
        if not path.is_file():
            if required:
                raise ConvbenchError(f"{path} is missing; run `convbench sweep --probe {name}` (or `dvc repro`)")
            continue
        try:
            content = json.loads(path.read_text())
            fingerprint, rows = content["fingerprint"], pd.DataFrame(content["rows"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConvbenchError(f"{path} is not a probe result ({type(exc).__name__}); run `convbench sweep --probe "
                                 f"{name}` again") from None
        if fingerprint != probe_fingerprint(params, name, dataset_sha256):
            if required:
                raise ConvbenchError(f"{path} was made with other params or data; run `convbench sweep --probe {name}`"
                                     " (or `dvc repro`)")
            continue
        frames[name] = rows
    return frames


@dataclass(frozen=True)
class Claim:
    """One textbook claim about the reference model and whether this run's numbers support it."""

    claim: str
    held: str  # "held", "did not hold", "partly held" or "not tested"
    evidence: str


@dataclass(frozen=True)
class Cast:
    """Who the probe section talks about: the models in report order, their labels, and the reference."""

    models: list[str]
    labels: dict[str, str]
    reference: str

    @property
    def others(self) -> list[str]:
        """Every model but the reference."""
        return [m for m in self.models if m != self.reference]


def _interval_text(interval: Interval, scale: float = 100.0) -> str:
    if interval.n < 2:
        return f"{interval.mean * scale:+.2f}"
    return f"{interval.mean * scale:+.2f} [{interval.low * scale:+.2f}, {interval.high * scale:+.2f}]"


def _accuracy_text(interval: Interval) -> str:
    if interval.n < 2:
        return f"{interval.mean:.4f}"
    return f"{interval.mean:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def advantage_by_setting(rows: pd.DataFrame, confidence: float, cast: Cast) -> pd.DataFrame:
    """Per setting: each model's accuracy interval (column = model) and the reference's lead over each other
    model, paired by seed (column 'lead:<model>'), plus each model's parameter count ('params:<model>')."""
    out = []
    for (setting, value), frame in rows.groupby(["setting", "value"], sort=False):
        by_model = {m: frame[frame["model"] == m].set_index("seed")["test_accuracy"] for m in cast.models}
        row: dict[str, object] = {"setting": setting, "value": value}
        for model in cast.models:
            row[model] = t_interval(by_model[model].to_numpy(), confidence)
            row[f"params:{model}"] = int(frame.loc[frame["model"] == model, "params"].iloc[0])
        for model in cast.others:
            seeds = sorted(set(by_model[cast.reference].index) & set(by_model[model].index))
            row[f"lead:{model}"] = t_interval([by_model[cast.reference][s] - by_model[model][s] for s in seeds], confidence)
        out.append(row)
    return pd.DataFrame(out)


def _advantage_table(table: pd.DataFrame, setting_header: str, cast: Cast, with_params: bool = False) -> Table:
    frame = pd.DataFrame({setting_header: table["setting"].tolist()})
    if with_params:
        frame["Parameters (" + " / ".join(cast.labels[m] for m in cast.models) + ")"] = [
            " / ".join(f"{row[f'params:{m}']:,}" for m in cast.models) for _, row in table.iterrows()]
    for model in cast.models:
        frame[f"{cast.labels[model]} accuracy"] = [_accuracy_text(i) for i in table[model]]
    for model in cast.others:
        frame[f"{cast.labels[cast.reference]} − {cast.labels[model]} (points)"] = [
            _interval_text(i) for i in table[f"lead:{model}"]]
    return Table(frame, ("left",) + ("right",) * (len(frame.columns) - 1))


def robustness_table(metrics: pd.DataFrame, kind: str, confidence: float, cast: Cast) -> pd.DataFrame:
    """Accuracy per model at each shift or noise level, with the reference's lead paired by seed."""
    prefix = f"robustness.{kind}."
    rows = []
    for column in [c for c in metrics.columns if c.startswith(prefix)]:
        level = column.removeprefix(prefix)
        for _, row in metrics.iterrows():
            rows.append({"setting": level, "value": float(level), "model": row["model"], "seed": row["seed"],
                         "params": row["params"], "test_accuracy": row[column]})
    return advantage_by_setting(pd.DataFrame(rows), confidence, cast) if rows else pd.DataFrame()


def drop_claim(table: pd.DataFrame, claim: str, what: str, cast: Cast, other: str) -> Claim:
    """Compare the reference's and `other`'s accuracy drop from the first to the last level of a robustness table."""
    first, last = table.iloc[0], table.iloc[-1]
    drops = {m: first[m].mean - last[m].mean for m in (cast.reference, other)}
    lead = f"lead:{other}"
    change = last[lead].mean - first[lead].mean
    better = drops[cast.reference] < drops[other]
    held = "held" if better and last[lead].low > first[lead].mean else ("partly held" if better else "did not hold")
    ref, oth = cast.labels[cast.reference], cast.labels[other]
    evidence = (f"at {what} {last['setting']} the {ref} loses {drops[cast.reference] * 100:.1f} points and the {oth} "
                f"{drops[other] * 100:.1f}; the {ref}'s lead moves by {change * 100:+.1f} points")
    return Claim(f"{claim} than the {oth}", held, evidence)


def permutation_claim(table: pd.DataFrame, cast: Cast, other: str) -> Claim:
    """Does shuffling the pixels (which a fully-connected model cannot notice) take away the reference's lead?"""
    lead = f"lead:{other}"
    original = table[table["setting"] == "original"].iloc[0][lead]
    permuted = table[table["setting"] == "permuted"].iloc[0][lead]
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
    ref, oth = cast.labels[cast.reference], cast.labels[other]
    evidence = (f"{ref} − {oth} is {_interval_text(original)} points on the original images and {_interval_text(permuted)} "
                f"on permuted ones: {owed * 100:+.2f} points"
                + (f" ({share:.0%} of the lead)" if np.isfinite(share) else "") + " are owed to spatial structure")
    return Claim(f"The {ref}'s lead over the {oth} comes from spatial structure (pixel permutation control)", held,
                 evidence)


def fraction_claim(table: pd.DataFrame, cast: Cast, other: str) -> Claim:
    """Is the reference's lead larger with less data?"""
    ordered = table.sort_values("value")
    small, full = ordered.iloc[0], ordered.iloc[-1]
    lead = f"lead:{other}"
    held = "held" if small[lead].mean > full[lead].mean else "did not hold"
    ref, oth = cast.labels[cast.reference], cast.labels[other]
    evidence = (f"{ref} − {oth} is {_interval_text(small[lead])} points with {small['setting']} of the training "
                f"set and {_interval_text(full[lead])} with {full['setting']}")
    return Claim(f"The {ref} is more data-efficient than the {oth}", held, evidence)


def size_claim(table: pd.DataFrame, cast: Cast, other: str) -> Claim:
    """At every scale, does the reference win?"""
    leads = table[f"lead:{other}"]
    wins = sum(1 for interval in leads if interval.mean > 0)
    significant = sum(1 for interval in leads if interval.n > 1 and interval.low > 0)
    held = "held" if wins == len(table) else ("partly held" if wins else "did not hold")
    ref, oth = cast.labels[cast.reference], cast.labels[other]
    counts = table[f"params:{cast.reference}"]
    evidence = (f"the {ref} is ahead at {wins} of {len(table)} sizes ({significant} with an interval above zero), "
                f"from {counts.min():,} to {counts.max():,} parameters")
    return Claim(f"At every size the {ref} beats the {oth}", held, evidence)


def probe_section(metrics: pd.DataFrame, probes: dict[str, pd.DataFrame], confidence: float,
                  figures: dict[str, Path], cast: Cast) -> Section:
    """The report section with every probe that ran, and the claims it tested."""
    level = f"{confidence:.0%}"
    ref = cast.labels[cast.reference]
    blocks: list = [Paragraph(
        f"Textbooks say CNNs win on images because of local filters, weight sharing and translation "
        f"equivariance. These probes test what the {ref} (the reference) has over each other model on this dataset. "
        f"Intervals are {level} t-intervals over seeds; each lead is paired by seed."
    )]
    claims: list[Claim] = []
    shifts = robustness_table(metrics, "shift", confidence, cast)
    noise = robustness_table(metrics, "noise", confidence, cast)
    if len(shifts) > 1:
        claims += [drop_claim(shifts, f"The {ref} is more robust to translation", "shift", cast, m) for m in cast.others]
        blocks += [Paragraph("**Translation.** Test images moved by k pixels (zero fill), averaged over directions."),
                   _advantage_table(shifts, "Shift (pixels)", cast)]
    if len(noise) > 1:
        claims += [drop_claim(noise, f"The {ref} is more robust to pixel noise", "noise std", cast, m) for m in cast.others]
        blocks += [Paragraph("**Noise.** Additive Gaussian noise, std in units of the pixel range."),
                   _advantage_table(noise, "Noise std", cast)]
    if "robustness" in figures:
        blocks.append(Figure(figures["robustness"], "Accuracy under translation and noise (mean over seeds, CI bars)."))
    if "permutation" in probes:
        table = advantage_by_setting(probes["permutation"], confidence, cast)
        claims += [permutation_claim(table, cast, m) for m in cast.others]
        blocks += [Paragraph("**Pixel permutation.** Every model retrained on images whose pixels are shuffled by one "
                             "fixed permutation. A fully-connected model cannot tell; a convolution loses its locality."),
                   _advantage_table(table, "Images", cast)]
    if "fraction" in probes:
        table = advantage_by_setting(probes["fraction"], confidence, cast).sort_values("value")
        claims += [fraction_claim(table, cast, m) for m in cast.others]
        blocks += [Paragraph("**Data efficiency.** Every model retrained on a stratified share of the training split."),
                   _advantage_table(table, "Training share", cast)]
        if "fraction" in figures:
            blocks.append(Figure(figures["fraction"], "Accuracy against the share of training data."))
    if "size" in probes:
        table = advantage_by_setting(probes["size"], confidence, cast).sort_values("value")
        claims += [size_claim(table, cast, m) for m in cast.others]
        blocks += [Paragraph("**Size sweep.** Every built-in model's channels and widths scaled; size-matched models "
                             "matched again at each scale."),
                   _advantage_table(table, "Scale", cast, with_params=True)]
    if claims:
        summary = pd.DataFrame({"Claim": [c.claim for c in claims],
                                "Verdict here": [f"**{c.held}**" for c in claims],
                                "Evidence": [c.evidence for c in claims]})
        blocks.insert(1, Table(summary, ("left", "left", "left")))
    return Section("Why does it win? Probes", blocks)


def interval_points(table: pd.DataFrame, cast: Cast) -> pd.DataFrame:
    """Long table (model label, level, mean, low, high) from an advantage table, for the interval figures."""
    rows = []
    for _, row in table.iterrows():
        for model in cast.models:
            interval = row[model]
            rows.append({"model": cast.labels[model], "level": row["value"], "mean": interval.mean, "low": interval.low,
                         "high": interval.high})
    return pd.DataFrame(rows)
