"""Anomaly detection: a global GRU next-step forecaster whose normalised errors feed a
Numenta-style anomaly likelihood (scoring core in ``contract.anomaly``)."""
