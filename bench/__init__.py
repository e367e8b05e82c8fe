"""The relayd benchmark: ``python bench/run.py`` (see run.py)."""
