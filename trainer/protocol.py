"""The lines a trainer rank prints for the train stage among its log lines: a prefix, then the payload.

``python -m trainer --live`` prints each optimizer step's metrics (``LIVE_PREFIX``, one JSON object) and a
note at the end of each start-up phase (``NOTE_PREFIX``, one line for the driver's console); with ``--serve``
it answers each round it trained (``ROUND_PREFIX``, JSON). This module imports nothing, so the driver reads
those lines without loading torch.
"""
LIVE_PREFIX = "gigpo-step "
NOTE_PREFIX = "gigpo-note "
ROUND_PREFIX = "gigpo-round "
