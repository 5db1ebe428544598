"""The stages of a round, in the order ``pipeline.driver`` runs them.

``setup`` (games, base model, tasks) -> ``warm_start`` (round -1: expert demos,
SFT, or a ``fork`` of another run; then the baseline evaluation) -> per round:
``collect`` -> ``advantage`` -> ``train`` -> ``evaluate`` -> ``metrics``, then
``retention`` of old checkpoints and the ``derived`` outputs (``metrics.jsonl``,
the trackers). Each stage is a function ``stage(client, run, round, ...)`` that
commits its stage folder (``pipeline.records`` names them) and does nothing when
it is committed; the machinery they run on is ``pipeline.runtime``.
"""
