"""RL state optimisation of DistillDrive: a DQN-style loss over the predicted ego status.

DistillDrive (arXiv 2508.05402, public code @15dff59) treats the 10-d ego status as a state and
the 3 navigation commands as actions. It is a loss, not a rollout:

* ``q`` = MLP 10 -> 24 -> 24 -> 3 evaluated on the **predicted** status (gradients flow into the
  teacher's status head: the state is what gets optimised);
* ``q_target`` = a second MLP of the same shape on the **ground-truth** status, trained on its own
  by ``L1(q_target(s_gt), onehot(command))``;
* reward ``r = w . [exp(-|status err|), exp(-|x_1 - 0.5 vx|), 1[0 < vx < 20],
  exp(-L1 traj), exp(-L1 first step), exp(-L1 endpoint)]`` with ``w`` a learnable 6-vector and
  the six terms detached;
* TD target ``r + 0.95 * max_a q_target(s_gt)``; loss ``L1(q(s_pred)[command], target)``;
* samples without CAN-bus status are masked; weight 1.0.

Quirk decisions:

* *Fixed*: the public code lets the TD loss back-propagate into ``q_target`` through the max
  term; here ``max_a q_target(s_gt)`` is detached (standard DQN: the target network is not moved by
  the TD error), so ``q_target`` learns only from its own command-classification term.
* *Kept*: the reward weights are learnable and receive gradient from the TD loss, as published
  (they can co-adapt with ``q``; initialised to 1).
* Absent status slots (mask False, e.g. our az / roll / pitch rate / vz) are zeroed in both
  states before the MLPs, so they carry no signal.
* Which speed: ``vx`` in the forward-offset term is the ground-truth speed (what the plan's first
  step should match); the ``0 < vx < 20`` indicator reads the predicted speed (a sane state).

Frame: ego frame (x forward), metres, m/s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsdrive.distilldrive.teacher_inputs import STATUS_DIM, STATUS_VX
from dsdrive.data.types import FUTURE_STEPS, STEP_SECONDS


class DQNStateLoss(nn.Module):
    """DQN-style state-optimisation loss.

    Args:
        status_dim: state size (10). hidden: MLP width (24). num_actions: commands (3).
        gamma: discount (0.95). weight: loss weight (1.0).
    """

    NUM_REWARD_TERMS = 6

    def __init__(self, status_dim: int = STATUS_DIM, hidden: int = 24, num_actions: int = 3, gamma: float = 0.95, weight: float = 1.0):
        super().__init__()
        self.gamma, self.weight = gamma, weight

        def q_net() -> nn.Sequential:
            return nn.Sequential(nn.Linear(status_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))

        self.q, self.q_target = q_net(), q_net()
        self.reward_weights = nn.Parameter(torch.ones(self.NUM_REWARD_TERMS))

    @torch.no_grad()
    def reward_terms(self, pred_status, gt_status, status_mask, plan, gt_future, gt_mask) -> torch.Tensor:
        """The six detached reward terms, (B, 6). Shapes as in :meth:`forward`."""
        m = status_mask.float()
        status_err = ((pred_status - gt_status).abs() * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        vx_gt, vx_pred = gt_status[:, STATUS_VX], pred_status[:, STATUS_VX]
        fwd = (plan[:, 0, 0] - STEP_SECONDS * vx_gt).abs()
        in_range = ((vx_pred > 0) & (vx_pred < 20)).float()
        fm = gt_mask.float()
        step_l1 = (plan - gt_future).abs().sum(-1)  # (B, 6)
        traj = (step_l1 * fm).sum(-1) / fm.sum(-1).clamp(min=1.0)
        first = step_l1[:, 0] * fm[:, 0]
        last_idx = (fm * torch.arange(1, FUTURE_STEPS + 1, device=fm.device)).argmax(-1)
        end = step_l1.gather(1, last_idx[:, None]).squeeze(1)
        return torch.stack([(-status_err).exp(), (-fwd).exp(), in_range, (-traj).exp(), (-first).exp(), (-end).exp()], dim=-1)

    def forward(
        self, pred_status: torch.Tensor, gt_status: torch.Tensor, status_mask: torch.Tensor, command: torch.Tensor,
        plan: torch.Tensor, gt_future: torch.Tensor, gt_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            pred_status, gt_status: (B, 10) DistillDrive status; status_mask: (B, 10) bool.
            command: (B,) long action index into :data:`dsdrive.data.types.COMMANDS`.
            plan: (B, 6, 2) the planned (best-mode) cumulative waypoints (m).
            gt_future: (B, 6, 2); gt_mask: (B, 6) bool.

        Returns:
            ``dqn`` (weighted scalar; 0 when no sample has CAN-bus status) and ``dqn_reward``
            (mean reward, detached, for logging).
        """
        valid = (status_mask[:, STATUS_VX] & gt_mask.any(-1)).float()
        m = status_mask.float()
        s_pred, s_gt = pred_status * m, gt_status * m
        r = self.reward_terms(pred_status, gt_status, status_mask, plan, gt_future, gt_mask) @ self.reward_weights
        q_gt = self.q_target(s_gt)
        target = r + self.gamma * q_gt.detach().max(-1).values
        q_a = self.q(s_pred).gather(1, command[:, None]).squeeze(1)
        td = (q_a - target).abs()
        cls = (q_gt - F.one_hot(command, q_gt.shape[-1]).float()).abs().mean(-1)
        n = valid.sum().clamp(min=1.0)
        loss = ((td + cls) * valid).sum() / n
        return {"dqn": self.weight * loss, "dqn_reward": (r.detach() * valid).sum() / n}
