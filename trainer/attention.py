"""Attention over packed sequences without flash-attn: exact, per sequence, no ``[N x N]`` mask.

Registered with transformers as ``packed_sdpa``. One packed row (``position_ids``
restarting at 0 for each sequence) has its queries, keys and values laid out as
``[sequences, heads, longest, head_dim]``, attended with causal SDPA and gathered
back: projections and MLPs run on the packed tokens only, and attention costs
what each sequence needs (SDPA with a block-diagonal mask over the whole row
would cost ``N^2``). Without restarts, or with several rows (a right-padded
batch), it is plain causal SDPA, exact for every real token of right-padded rows.
Transformers builds no mask for an attention it does not know.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

NAME = "packed_sdpa"


def packed_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                dropout: float = 0.0, scaling: float | None = None, position_ids: torch.Tensor | None = None,
                **kwargs) -> tuple[torch.Tensor, None]:
    """``query`` [B, H, N, d], ``key``/``value`` [B, Hkv, N, d] -> ([B, N, H, d], None), as transformers expects."""
    def attend(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling,
                                              enable_gqa=q.shape[1] != k.shape[1])

    if position_ids is None or query.shape[0] != 1:
        return attend(query, key, value).transpose(1, 2).contiguous(), None
    slot, rows, width = _slots(position_ids[0])

    def spread(x: torch.Tensor) -> torch.Tensor:  # [1, h, N, d] -> [rows, h, width, d]
        out = x.new_zeros(x.shape[1], rows * width, x.shape[3]).index_copy(1, slot, x[0])
        return out.view(x.shape[1], rows, width, x.shape[3]).transpose(0, 1)

    out = attend(spread(query), spread(key), spread(value))  # [rows, H, width, d]
    out = out.transpose(0, 1).reshape(query.shape[1], rows * width, query.shape[3]).index_select(1, slot)
    return out.transpose(0, 1).unsqueeze(0).contiguous(), None


def _slots(pos: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Each packed token's slot ``sequence * width + offset`` in a [sequences x width] layout; sequences; width."""
    start = torch.ones_like(pos, dtype=torch.bool)
    start[1:] = pos[1:] != pos[:-1] + 1
    seq = torch.cumsum(start, 0) - 1
    first = torch.nonzero(start).squeeze(1)
    offset = torch.arange(len(pos), device=pos.device) - first[seq]
    width = int(offset.max()) + 1
    return seq * width + offset, len(first), width


AttentionInterface.register(NAME, packed_sdpa)
