"""lemmse_lite: the local-equivariant MMSE (LE-MMSE) and the CNNs that follow it.

The package, by folder (imports run one way: from the folders down to the top level; a module is
named by its file, e.g. ``lemmse_lite.estimators.engine``):

* ``estimators/``: ``mmse``, ``equivariant_mmse``, ``le_mmse`` (``lemmse_lite.estimators``, the
  entry point), built from ``estimator_inputs``, ``image_estimators``, ``local_queries``,
  ``local_estimators``, ``streaming``, ``engine`` (the one online softmax), ``diagnostics`` and
  ``patches``; ``metrics``; ``reference`` (the float64 reference); ``distributed`` (a sharded
  LE-MMSE);
* ``networks/``: ``models`` (local networks), ``training`` (``train``, ``TrainConfig``, run
  folders), ``zoo`` (the course's trained networks, cached or shipped), ``shipped`` (the list;
  ``weights/`` holds them);
* ``experiments/``: the cached experiments of the course (``lemmse_lite.experiments``),
  ``compare``, ``controls``, ``diffusion``, ``reproduce``;
* ``course/``: ``lemmse course`` (``lemmse_lite.course``), ``pages``, ``pdf``, ``schematics``,
  ``widgets``;
* the top level, the foundations every folder uses: ``operators`` (forward operators,
  pre-inverses, ``measure`` and its seed rule), ``data``, ``profiles``, ``problems`` (the problem
  registry), ``checks``, ``errors``, ``files`` (the one atomic writer), ``store`` (the cache),
  ``sources`` (the code a cache key covers), ``tables``, ``plotting``; the command line ``lemmse``
  (``python -m lemmse_lite``, ``cli``).

The course in ``course/`` derives every formula (e.g. ``course/04_locality.md``, ``eq-lemmse``).

Reference: M.-H. Nguyen, Q.-B. Do, E. Pauwels, P. Weiss, *An analytic theory of convolutional
neural network inverse problems solvers*, arXiv:2601.10334 (2026).
"""

__version__ = "0.1.0"
