"""The trainer: one training path for ``hil train``, ``hil demo``, ``hil runs eval``,
``hil sweep`` and the reproduction scripts (docs/ARCHITECTURE.md, "The trainer").

Public API: :func:`hil.trainer.session.train` (a whole run from a
:class:`~hil.trainer.session.TrainRequest`), :func:`hil.trainer.session.build_backend`,
:func:`hil.trainer.session.build_trainer` and :func:`hil.trainer.session.load_task` (the
parts, for in-process use), :class:`hil.trainer.trainer.Trainer`,
:class:`hil.trainer.evaluator.Evaluator`, :class:`hil.trainer.checkpoint.Checkpointer`,
the backends of :mod:`hil.trainer.backend` and :mod:`hil.trainer.chip_backend`, and the run
config of :mod:`hil.trainer.config`.
"""
