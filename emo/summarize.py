"""``python -m emo.summarize``: emo-summarize, which lives in :mod:`emo.report.summarize`."""

from emo.report.summarize import cli

if __name__ == "__main__":
    cli()
