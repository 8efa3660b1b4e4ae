"""What the numbers depend on: datasets, the model registry, layers, the training runtime, measurement, statistics,
the probes' transforms and the one cell resolver. With `artifacts`, the only code in a cell's identity.

Add a dataset in data.py, a model in models.py (one registered function), a probe in probes.py (one entry).
"""
