"""DVC stage `aggregate` of a table suite: every evaluation of the suite's models × columns × seeds
→ <outputs>/table/ (table.md, table.csv, table.json, scores.csv, tags.csv, plot.csv).
Usage: python stages/aggregate.py <params.yaml> [key=value ...]."""

import sys

from objdisc import pipeline
from objdisc.config import load_params
from objdisc.errors import exit_on_error

if __name__ == "__main__":
    with exit_on_error():
        pipeline.aggregate(load_params(sys.argv[1] if len(sys.argv) > 1 else "params.yaml", sys.argv[2:]))
