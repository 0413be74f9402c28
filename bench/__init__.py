"""Benchmarks for godefer: ``python -m bench`` or ``python bench/run.py`` (see ``run.py``)."""
