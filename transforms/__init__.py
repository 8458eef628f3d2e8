"""Beam composites of the import pipeline; each wires pure `core` functions."""
