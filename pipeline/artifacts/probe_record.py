"""results/<dataset>/probes/<probe>.json: one retraining probe's rows (the probe stage's record, read by the report)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pipeline.artifacts.records import Record


class ProbeRow(BaseModel):
    """One (setting, model, seed) of a retraining probe."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    probe: str
    setting: str
    value: float
    model: str
    seed: int
    params: int
    train_images: int
    final_val_accuracy: float
    final_train_loss: float | None = None  # the last epoch's mean training loss (None in older rows)
    test_accuracy: float
    shifted: dict[str, float] = {}  # test accuracy at each of evaluate.shifts, for probes that measure it


class ProbeResult(Record):
    """results/<dataset>/probes/<probe>.json: every row of one probe and the fingerprint of what it was run from."""

    probe: str
    dataset: str
    models: list[str]
    fingerprint: str
    rows: list[ProbeRow]
    code_sha256: str = ""  # the probe stage's code identity: with the fingerprint, whether the result is current
