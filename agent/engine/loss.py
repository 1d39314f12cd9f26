"""PPO's clipped objective on one minibatch, as stable-baselines3's ``PPO.train`` computes it
(advantages normalised per minibatch, optional value clipping, entropy bonus), returning its
logged figures as one detached tensor so that the update never waits for the host."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

STATS = ("policy_gradient_loss", "value_loss", "entropy_loss", "approx_kl", "clip_fraction")
"""The names of :func:`clipped_loss`'s figures, in order (logged under ``train/``)."""


@dataclass(frozen=True)
class LossWeights:
    """The coefficients of one update (``clip_range`` and ``clip_range_vf`` after schedules)."""

    clip_range: float
    clip_range_vf: float | None
    ent_coef: float
    vf_coef: float
    normalize_advantage: bool = True


def clipped_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor | None,
    w: LossWeights,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss to minimise and its figures ``(len(STATS),)``; all inputs (N,)."""
    if w.normalize_advantage and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - w.clip_range, 1 + w.clip_range)
    policy_loss = -torch.min(advantages * ratio, advantages * clipped).mean()
    if w.clip_range_vf is not None:
        values = old_values + torch.clamp(values - old_values, -w.clip_range_vf, w.clip_range_vf)
    value_loss = F.mse_loss(returns, values)
    # without an analytical entropy, SB3 estimates it from the log-probabilities
    entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
    loss = policy_loss + w.ent_coef * entropy_loss + w.vf_coef * value_loss
    with torch.no_grad():
        approx_kl = torch.mean((ratio - 1) - log_ratio)
        clip_fraction = torch.mean((torch.abs(ratio - 1) > w.clip_range).float())
        stats = torch.stack([policy_loss, value_loss, entropy_loss, approx_kl, clip_fraction])
    return loss, stats.detach()
