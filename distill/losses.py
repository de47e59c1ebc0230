"""Distillation losses for the TTS student, computed through the codebook-restricted head.

    loss_fn = DistillLoss(token_layout(model.config), eot_id=3, kd_ratio=0.5)
    hidden = model.model(batch["input_ids"])                      # [B, S, H], after the norm
    out = loss_fn(hidden, model.lm_head.weight, batch)
    out["loss"].backward()

- sequence-level KD: cross-entropy on the teacher's own tokens (``labels``) over the ids allowed at
  each position (``streams``: 0 group start = vq02 + EOT, 1 = vq02, 2 = vq06, -1 no loss);
- token-level KD: forward KL(teacher || student) on the stored teacher top-k (``topk_ids``,
  ``topk_logprobs``) with the tail mass as one extra outcome, mixed as
  ``(1 - kd_ratio) * CE + kd_ratio * KL`` at positions that have top-k (CE alone elsewhere).

:func:`full_vocab_loss` computes the same numbers from full ``[N, V]`` logits with the same mask:
the check for tests and the baseline for ``bench/distill_head.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.restricted_ce import IGNORE_INDEX, HeadRanges, restricted_linear_ce


def _summary(loss: torch.Tensor, stats: torch.Tensor, mean: bool = False) -> dict:
    """The result dict from the loss (a sum unless ``mean``) and ``stats`` as in
    :meth:`RestrictedCE.stats`."""
    ce, kl, n_kd, t0, t1, t2, c0, c1, c2 = stats.tolist()
    n = int(t0 + t1 + t2)
    return dict(loss=loss if mean else loss / max(n, 1), ce=ce / max(n, 1), kl=kl / max(n_kd, 1),
                n_tokens=n, n_kd=int(n_kd), acc_vq02=(c0 + c1) / max(t0 + t1, 1),
                acc_vq06=c2 / max(t2, 1))


def _batch_fields(batch: dict, n: int):
    labels = batch["labels"].reshape(n)
    streams = batch["streams"].reshape(n)
    ids, logp = batch.get("topk_ids"), batch.get("topk_logprobs")
    if ids is not None:
        ids, logp = ids.reshape(n, -1), logp.reshape(n, -1)
    return labels, streams, ids, logp


class DistillLoss:
    """Sequence- and token-level KD through the codebook-restricted head.

    Args:
        layout: the student's ``engine.tokens.TokenLayout`` (``distill.token_layout(config)``).
        eot_id: the id that ends the audio, allowed at group starts.
        kd_ratio: weight of the top-k KL, in [0, 1]; 0 is pure sequence-level KD.
        restricted: False computes the same loss from full-vocabulary logits (slow; a check).
        chunk: rows per chunk of the fused head (default: automatic).
    """

    def __init__(self, layout, eot_id: int = 3, kd_ratio: float = 0.0, restricted: bool = True,
                 chunk: int | None = None):
        if not 0.0 <= kd_ratio <= 1.0:
            raise ValueError(f"kd_ratio {kd_ratio} is outside [0, 1]")
        self.ranges = HeadRanges.from_layout(layout, eot_id)
        self.kd_ratio, self.restricted, self.chunk = float(kd_ratio), restricted, chunk

    def __call__(self, hidden: torch.Tensor, lm_head_weight: torch.Tensor, batch: dict) -> dict:
        """Loss of one batch.

        Args:
            hidden: ``[B, S, H]`` or ``[N, H]`` final hidden states.
            lm_head_weight: ``[V, H]``.
            batch: ``labels long [B, S]`` (shifted, -100 no loss), ``streams int8 [B, S]``, and
                optionally ``topk_ids long [B, S, k]`` (-1 empty), ``topk_logprobs [B, S, k]``.
        Returns:
            ``loss`` (scalar tensor, mean over loss tokens), ``ce`` and ``kl`` (floats; KL mean
            over positions with top-k), ``n_tokens``, ``n_kd``, ``acc_vq02``, ``acc_vq06``.
        """
        if not self.restricted:
            return full_vocab_loss(hidden, lm_head_weight, batch, self.ranges, self.kd_ratio)
        labels, streams, ids, logp = _batch_fields(batch, hidden.numel() // hidden.shape[-1])
        out = restricted_linear_ce(hidden, lm_head_weight, labels, streams, self.ranges,
                                   topk_ids=ids, topk_logprobs=logp, kd_ratio=self.kd_ratio,
                                   reduction="mean", chunk=self.chunk)
        return _summary(out.loss, out.stats(), mean=True)


def allowed_mask(streams: torch.Tensor, ranges: HeadRanges, vocab: int) -> torch.Tensor:
    """``bool [N, V]``: the ids each row may predict (all False where ``streams`` is -1)."""
    r = ranges
    cols = torch.arange(vocab, device=streams.device)[None, :]
    vq02 = (cols >= r.vq02_start) & (cols < r.vq02_start + r.vq02_size)
    vq06 = (cols >= r.vq06_start) & (cols < r.vq06_start + r.vq06_size)
    s = streams.reshape(-1, 1)
    return ((s == 0) & (vq02 | (cols == r.eot_id))) | ((s == 1) & vq02) | ((s == 2) & vq06)


def _full_topk_kl(logp_s: torch.Tensor, allowed: torch.Tensor, ids, logp_t):
    """Per-row KL from full student log-probs ``[n, V]``; the student tail is ``1 - sum_k q``."""
    valid = (ids >= 0) & allowed.gather(1, ids.clamp_min(0))
    logq = torch.where(valid, logp_s.gather(1, ids.clamp_min(0)), 0.0)
    p = torch.where(valid, logp_t.to(logq.dtype).exp(), 0.0)
    tail_p = (1 - p.sum(1)).clamp_min(0)
    tail_q = (1 - torch.where(valid, logq.exp(), 0.0).sum(1)).clamp_min(1e-30)
    head = torch.where(p > 0, p * (logp_t.to(logq.dtype) - logq), 0.0).sum(1)
    return head + torch.xlogy(tail_p, tail_p) - tail_p * tail_q.log(), valid.any(1)


def full_vocab_loss(hidden: torch.Tensor, lm_head_weight: torch.Tensor, batch: dict,
                    ranges: HeadRanges, kd_ratio: float = 0.0) -> dict:
    """:class:`DistillLoss` from full ``[N, V]`` logits masked to ``-inf`` outside the allowed set.

    Same arguments and result as ``DistillLoss(...)(hidden, lm_head_weight, batch)``; autograd
    supplies the gradients.
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    labels, streams, ids, logp_t = _batch_fields(batch, h.shape[0])
    rows = (streams >= 0) & (labels != IGNORE_INDEX)
    logits = (h[rows] @ lm_head_weight.t()).to(torch.promote_types(h.dtype, torch.float32))
    allowed = allowed_mask(streams[rows], ranges, logits.shape[1])
    logits = logits.masked_fill(~allowed, float("-inf"))
    logp_s = F.log_softmax(logits, dim=-1)
    target = labels[rows].long()[:, None]
    ce = -logp_s.gather(1, target)[:, 0]
    kl, has_k = torch.zeros_like(ce), torch.zeros_like(ce, dtype=torch.bool)
    if ids is not None:
        kl, has_k = _full_topk_kl(logp_s, allowed, ids[rows].long(), logp_t[rows])
    w_kl = has_k.to(ce.dtype) * kd_ratio
    loss_sum = ((1 - w_kl) * ce + w_kl * kl).sum()
    s = streams[rows].long()
    correct = (logits.argmax(1) == target[:, 0]).double()
    per = torch.zeros(2, 3, dtype=torch.float64, device=s.device)
    per[0].index_add_(0, s, torch.ones_like(correct))
    per[1].index_add_(0, s, correct)
    kl_sum = torch.where(has_k, kl.detach(), 0).double().sum()
    head = torch.stack([ce.detach().double().sum(), kl_sum, has_k.double().sum()])
    return _summary(loss_sum, torch.cat([head, per.reshape(-1)]))
