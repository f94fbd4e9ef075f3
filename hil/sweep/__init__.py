"""``hil sweep``: many ``hil train`` runs over seeds, settings, rules and chips, on Ray Tune.

:mod:`hil.sweep.spec` (the spec, validated without Ray), :mod:`hil.sweep.trial` (one trial:
a ``hil train`` process), :mod:`hil.sweep.results` (``sweep.json``, ``sweep.png``),
:mod:`hil.sweep.progress` (terminal view) and :mod:`hil.sweep.runner` (Ray and Tune; needs
the ``sweep`` extra).
"""
