"""G2P Bridge: benefit payments from a program's MIS to beneficiaries through a sponsor bank."""

__version__ = "0.1.0"
