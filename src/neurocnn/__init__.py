"""neurocnn: train, evaluate and explain 3D CNNs that classify brain MRI scans."""

from neurocnn.errors import NeuroCNNError

__version__ = "0.1.0"
__all__ = ["NeuroCNNError", "__version__"]
