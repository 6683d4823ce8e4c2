"""DVC stage `evaluate`: Evaluate the trained model on the test split: eval/metrics.json, scenes.csv, slots.png."""

import sys

from objdisc import pipeline
from objdisc.config import load_params
from objdisc.errors import exit_on_error

if __name__ == "__main__":
    with exit_on_error():
        pipeline.evaluate(load_params(sys.argv[1] if len(sys.argv) > 1 else "params.yaml"))
