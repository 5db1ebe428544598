"""The stages of a round, in the order ``pipeline/round.py`` runs them.

``setup`` (games, base model, tasks) -> ``warm_start`` (round -1: expert demos,
SFT, baseline evaluation) -> collect (``pipeline.rollout``) -> advantage
(``pipeline.advantage``) -> ``train`` -> ``evaluate`` -> ``metrics`` (gathered
into the ``record``), then ``derived`` outputs (``metrics.jsonl``, TensorBoard).
"""
