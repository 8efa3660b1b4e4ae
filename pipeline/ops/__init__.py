"""Operations around the numbers: MLflow (tracking.py is its only user), grid sweeps, Ray clusters and cell locks.
None of it is in a cell's identity: editing it retrains nothing."""
