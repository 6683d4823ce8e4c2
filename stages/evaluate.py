"""DVC stage `evaluate`: Evaluate the trained model on the test split (of evaluate.dataset, default the
training dataset): eval/ (or eval-<dataset>/) metrics.json, scenes.csv, objects.csv, tags.csv, tags.png,
slots.png. Usage: python stages/evaluate.py <params.yaml> [key=value ...] (overrides, as in table suites)."""

import sys

from objdisc import pipeline
from objdisc.config import load_params
from objdisc.errors import exit_on_error

if __name__ == "__main__":
    with exit_on_error():
        pipeline.evaluate(load_params(sys.argv[1] if len(sys.argv) > 1 else "params.yaml", sys.argv[2:]))
