import os
import sys

# Tests import helpers that sit beside them (e.g. `reference_torch`).
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
