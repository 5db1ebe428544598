"""Plan a run before renting GPUs: ``python -m pipeline.plan --config CFG`` (``pipeline.plan.cli``).

``shape`` reads the model's shape and counts its parameters, ``layout`` who runs each stage and the batch
arithmetic, ``memory`` a training rank's and a vLLM engine's GPU memory, ``traffic`` a round's files,
``build`` assembles the ``Plan`` and its problems, ``report`` prints it.
"""
from pipeline.plan.build import Plan, make_plan
from pipeline.plan.cli import main

__all__ = ["Plan", "main", "make_plan"]
