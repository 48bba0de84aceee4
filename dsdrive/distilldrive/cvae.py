"""Conditional VAE linking expert futures and instance features (DistillDrive, FIERY-style).

DistillDrive adds a generative op to its planner (public code @15dff59, after FIERY, Hu et al.
ICCV 2021): a **prior** over a latent z from the instance feature, a **posterior** from the
ground-truth future, KL(posterior || prior) as loss (weight 1.0), and a decoder that turns z into
a feature update added residually: a GRU (latent 32 -> hidden 64, 4 layers) whose initial
hidden state comes from the instance feature, then an MLP back to the feature size. Training
samples z from the posterior; inference samples it from the prior.

Shapes: instance features (B, R, D) for R rows (agents, or the 18 ego queries with the ego GT
future repeated on every row); futures (B, R, T, 2) cumulative ego-frame positions (m) from each
row's current centre, of which the per-step offsets (T x 2, T = 6) feed the posterior.

Quirk decisions (public code -> here):

* *Fixed*: ReLU on ``mu`` / ``log_sigma`` (forces mu >= 0 and sigma >= 1); removed, log_sigma is
  clamped to [-5, 5] instead.
* *Fixed*: the GRU's h0 is reshaped (B*R, L*H) -> (B*R, L, H) -> (L, B*R, H); the public
  ``view(L, B*R, H)`` scrambles instances across rows.
* *Fixed*: agent-row misalignment in forward; here each row's posterior reads that row's future.
* Rows without a complete future (``future_valid`` False) use the prior at training time too and
  contribute no KL.
* Inference is deterministic under ``seed`` and independent of batching: the prior noise of a
  row is row ``row_index`` of a fixed (``noise_rows``, latent) table drawn once from ``seed``, so
  a sample gets the same z whatever it is batched or padded with (``sample_at_inference=False``
  uses the prior mean instead).
"""

from __future__ import annotations

import torch
from torch import nn

from dsdrive.distilldrive.layers import mlp
from dsdrive.distilldrive.losses import cumulative_to_offsets


class ConditionalVAE(nn.Module):
    """FIERY-style conditional VAE feature op.

    Args:
        feature_dim: instance feature size D. future_steps: T of the posterior input (6).
        latent_dim: 32. hidden_dim: GRU width, 64. num_layers: GRU layers, 4.
        seed: inference noise seed. sample_at_inference: sample the prior (True) or take its mean.
        kl_weight: weight of the KL term (1.0). noise_rows: rows of the inference noise table.
    """

    def __init__(self, feature_dim: int, future_steps: int = 6, latent_dim: int = 32, hidden_dim: int = 64,
                 num_layers: int = 4, seed: int = 0, sample_at_inference: bool = True, kl_weight: float = 1.0,
                 noise_rows: int = 256):
        super().__init__()
        self.future_steps, self.latent_dim, self.hidden_dim, self.num_layers = future_steps, latent_dim, hidden_dim, num_layers
        self.seed, self.sample_at_inference, self.kl_weight = seed, sample_at_inference, kl_weight
        self.prior = mlp(feature_dim, feature_dim, 2 * latent_dim, layers=2)
        self.posterior = mlp(2 * future_steps, feature_dim, 2 * latent_dim, layers=2)
        self.h0 = nn.Linear(feature_dim, num_layers * hidden_dim)
        self.gru = nn.GRU(latent_dim, hidden_dim, num_layers, batch_first=True)
        self.out = mlp(hidden_dim, feature_dim, feature_dim, layers=2)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("inference_noise", torch.randn(noise_rows, latent_dim, generator=gen))  # saved with the weights

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = x.chunk(2, dim=-1)
        return mu, log_sigma.clamp(-5.0, 5.0)

    def forward(self, features: torch.Tensor, future: torch.Tensor | None = None, future_valid: torch.Tensor | None = None,
                row_index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Apply the op.

        Args:
            features: (B, R, D) instance features.
            future: (B, R, T, 2) GT cumulative future (m), needed in training for the posterior.
            future_valid: (B, R) bool rows whose future is complete.
            row_index: (B, R) long row of the inference noise table per row (default 0..R-1).

        Returns:
            ``features`` (B, R, D) updated, ``kl`` weighted scalar (0 without posterior rows),
            ``z`` (B, R, latent).

        Raises:
            ValueError: ``future`` has the wrong step count, or ``row_index`` exceeds ``noise_rows``.
        """
        b, r, d = features.shape
        mu_p, ls_p = self._split(self.prior(features))
        kl = features.new_zeros(())
        if self.training:
            z = mu_p + ls_p.exp() * torch.randn_like(mu_p)
            if future is not None:
                if future.shape[-2] != self.future_steps:
                    raise ValueError(f"ConditionalVAE: future has {future.shape[-2]} steps, expected {self.future_steps}")
                valid = future_valid if future_valid is not None else torch.ones(b, r, dtype=torch.bool, device=features.device)
                mu_q, ls_q = self._split(self.posterior(cumulative_to_offsets(future).flatten(-2)))
                z_q = mu_q + ls_q.exp() * torch.randn_like(mu_q)
                z = torch.where(valid[..., None], z_q, z)
                kl_rows = (ls_p - ls_q + ((2 * ls_q).exp() + (mu_q - mu_p) ** 2) / (2 * (2 * ls_p).exp()) - 0.5).sum(-1)
                kl = self.kl_weight * (kl_rows * valid).sum() / valid.float().sum().clamp(min=1.0)
        elif self.sample_at_inference:
            if row_index is None:
                row_index = torch.arange(r, device=features.device).expand(b, r)
            if int(row_index.max()) >= len(self.inference_noise):
                raise ValueError(f"ConditionalVAE: row index {int(row_index.max())} >= noise_rows {len(self.inference_noise)}")
            z = mu_p + ls_p.exp() * self.inference_noise.to(mu_p.dtype)[row_index]
        else:
            z = mu_p
        h0 = self.h0(features).reshape(b * r, self.num_layers, self.hidden_dim).transpose(0, 1).contiguous()
        seq = z.reshape(b * r, 1, self.latent_dim).expand(-1, self.future_steps, -1)
        out, _ = self.gru(seq, h0)
        delta = self.out(out[:, -1]).reshape(b, r, d)
        return {"features": features + delta, "kl": kl, "z": z}
