"""Reports: metrics and their summary (metrics.py), figures (plots.py), multirun tables
(summarize.py) and the data and results analysis behind the notebooks (analysis.py)."""
