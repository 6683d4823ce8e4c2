"""DVC stage `convert`: the original files in data/raw/<dataset> → canonical shards in data/shards/<dataset>."""

import sys

from objdisc import pipeline
from objdisc.config import load_params
from objdisc.errors import exit_on_error

if __name__ == "__main__":
    with exit_on_error():
        pipeline.convert(load_params(sys.argv[1] if len(sys.argv) > 1 else "params.yaml", sys.argv[2:]))
