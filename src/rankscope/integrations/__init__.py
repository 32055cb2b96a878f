"""Training-framework callbacks: the collector driven by a framework's own step events.

- ``rankscope.integrations.transformers.RankscopeCallback``: a ``transformers.TrainerCallback``;
- ``rankscope.integrations.lightning.RankscopeCallback``: a ``lightning.pytorch.Callback``
  (``rankscope.integrations.pytorch_lightning`` for code that imports ``pytorch_lightning``).

Each is a thin layer over ``rankscope.Collector`` (``_core.CallbackCollector``): the
collector starts when training begins, step 0 begins with the first training step and
each framework step that ends is one collector step, and the collector stops when
training ends; rank 0 can then log the report to MLflow or W&B. Importing this package
imports no framework: each module imports its own when it is imported. Like the
collector, these modules never import the review side (the tracker export runs
``rankscope export`` in a process of its own). See docs/integrations.md.
"""
