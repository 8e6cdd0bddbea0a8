"""diffpose: a reproducible implementation of DiffPose (Feng et al., ICCV 2023)."""

__version__ = "0.1.0"
