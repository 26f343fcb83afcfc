"""Data layer: cohort tables, NIfTI reading with checks, preparation, cache, splits, synthetic cohorts.

This package never imports model code.
"""
