"""Scaling-law fitting internals behind :mod:`planner.fitter` (numpy only: no torch, and not even
scipy on the fitting path, so `cp-plan fit` starts fast).

``solver``: a batched robust Levenberg–Marquardt (IRLS) optimizer that fits many starts or
bootstrap replicates at once. ``result``: :class:`FitResult`. ``common``: input validation,
scale levels, the fitting pipeline shared by the parametric laws. One module per law form:
``chinchilla``, ``compute``, ``shape``, ``isoflop``. Import the public names from
:mod:`planner.fitter`.
"""
