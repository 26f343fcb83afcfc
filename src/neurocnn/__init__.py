"""neurocnn: train, evaluate and explain 3D CNNs that classify brain MRI scans."""

import os

# OpenMP threads that busy-wait between parallel regions (the default) slow PyTorch on a CPU by up
# to 10× as soon as another process competes for the cores (measured here: 225 ms instead of 23 ms
# for one MriNet pass at 6 mm next to one other training job). Sleeping instead costs nothing
# measurable on an idle machine. It only takes effect when set before torch is first imported, as
# the `neurocnn` command does; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from neurocnn.errors import NeuroCNNError

__version__ = "0.1.0"
__all__ = ["NeuroCNNError", "__version__"]
