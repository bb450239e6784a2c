"""Reproduce a registered version with `dvc repro` (filled in with the DVC pipeline)."""
