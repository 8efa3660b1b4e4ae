"""What the numbers depend on: the prepared data, the model registry, layers, the training runtime, measurement,
statistics, the probes' transforms and the one cell resolver. With `artifacts`, the only code in a cell's identity.

Concerns no trained weight depends on sit in modules of their own, so editing them recomputes no cell: the dataset
catalog (downloaders and readers, catalog.py, used by download and prepare) and the bench's clocks (timing.py).
Add a dataset in catalog.py, a model in models.py (one registered function), a probe in probes.py (one entry) with its
words in reporting/probes.py (one entry).
"""
