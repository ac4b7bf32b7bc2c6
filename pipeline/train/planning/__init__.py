"""The time budget (``make train BUDGET=``): the train stage planned before it trains.

``resolve.py`` is the stage's entry: it prices and builds the decode caches (``decoding.py``),
times every run through its member kind (``probe.py``), values sets of runs by their probe
estimates (``value.py``), plans the runs and their epochs (``plan.py``), writes
``plan.toml`` (``plan_file.py``), and after each trained run plans the rest again
(``replan.py``). What a kind's probe returns (``Cost``, ``Estimate``) lives with the kinds
(``kinds/pricing.py``), which this package reads and never the other way round.
"""
