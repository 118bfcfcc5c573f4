"""lemmse_lite: the local-equivariant MMSE (LE-MMSE) and the CNNs that follow it.

Modules: ``estimators`` (MMSE, E-MMSE, LE-MMSE), ``operators`` (forward operators, pre-inverses,
``measure``), ``data``, ``metrics``, ``models`` (local networks), ``training`` (``train``,
``TrainConfig``, run folders), ``compare``, ``plotting``, ``widgets`` (the course's explorers),
``profiles``, ``problems`` (the course's problems by name), ``store`` (the cache and atomic writes),
``zoo`` (the course's trained networks, cached or shipped), ``experiments`` (cached course
experiments), ``diagnostics``; the command line is
``lemmse`` (``python -m lemmse_lite``). The course in ``course/`` derives every formula (e.g.
``course/04_locality.md``, ``eq-lemmse``).

Reference: M.-H. Nguyen, Q.-B. Do, E. Pauwels, P. Weiss, *An analytic theory of convolutional
neural network inverse problems solvers*, arXiv:2601.10334 (2026).
"""

__version__ = "0.1.0"
