"""lemmse_lite: the local-equivariant MMSE (LE-MMSE) and the CNNs that follow it.

Reference: M.-H. Nguyen, Q.-B. Do, E. Pauwels, P. Weiss, *An analytic theory of convolutional
neural network inverse problems solvers*, arXiv:2601.10334 (2026).
"""

__version__ = "0.1.0"
