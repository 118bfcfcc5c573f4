"""lemmse_lite: the local-equivariant MMSE (LE-MMSE) and the CNNs that follow it.

Modules, by role (the package is flat; ``estimators`` and ``operators`` are the entry points):

* estimators: ``estimators`` (``mmse``, ``equivariant_mmse``, ``le_mmse``), built from
  ``estimator_inputs``, ``image_estimators``, ``local_queries``, ``local_estimators``,
  ``streaming``, ``engine`` (the one online softmax), ``diagnostics`` and ``patches``;
  ``operators`` (forward operators, pre-inverses, ``measure`` and its seed rule), ``checks``,
  ``metrics``, ``reference`` (the float64 reference), ``distributed`` (a sharded LE-MMSE);
* networks: ``models`` (local networks), ``training`` (``train``, ``TrainConfig``, run folders),
  ``zoo`` (the course's trained networks, cached or shipped), ``shipped`` (the shipped list),
  ``store`` (the cache) and ``files`` (the one atomic writer);
* experiments: ``data``, ``problems`` (the problem registry), ``profiles``, ``compare``,
  ``controls``, ``experiments`` (cached course experiments), ``reproduce``, ``diffusion``,
  ``tables``;
* course: ``course``, ``pages``, ``pdf``, ``plotting``, ``schematics``, ``widgets``; the command
  line is ``lemmse`` (``python -m lemmse_lite``, ``cli``, errors in ``errors``).

The course in ``course/`` derives every formula (e.g. ``course/04_locality.md``, ``eq-lemmse``).

Reference: M.-H. Nguyen, Q.-B. Do, E. Pauwels, P. Weiss, *An analytic theory of convolutional
neural network inverse problems solvers*, arXiv:2601.10334 (2026).
"""

__version__ = "0.1.0"
