"""DVC stage `generate@<name>`: draw the embedded dataset <name> (synth: multi-view scenes; sprites:
2D sprites) from its params block into data/raw/<name>."""

import sys

from objdisc import pipeline
from objdisc.config import load_params
from objdisc.errors import exit_on_error

if __name__ == "__main__":
    with exit_on_error():
        name = sys.argv[1] if len(sys.argv) > 1 else "synth"
        pipeline.synth(load_params(sys.argv[2] if len(sys.argv) > 2 else "params.yaml"), name)
