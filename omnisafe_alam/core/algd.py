"""ALGD: the augmented-Lagrangian-guided diffusion policy (arXiv 2602.02924) on the plugin's base.

It shares :class:`StatewiseOffPolicy` (adapter, checks, calibration, full checkpoints, the
training loop) with the rest of the plugin and nothing of SAC but the replay loop: its policy is
a VE-SDE diffusion model (:class:`~omnisafe_alam.core.diffusion_actor.DiffusionActor`) with no
entropy term, its cost critics are an ensemble, and its multiplier is one scalar. The math is in
:mod:`omnisafe_alam.core.diffusion`; the reference is ``agents/algd/ALGD_VESDE.py`` of
github.com/Wenxuan52/ALGD.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn, optim
from torch.nn.utils.clip_grad import clip_grad_norm_

from omnisafe_alam.core import diffusion as D
from omnisafe_alam.core.models import ALGDActorCritic, ScalarMultiplier
from omnisafe_alam.core.training import StatewiseOffPolicy, _check_finite

__all__ = ['ALGD']

#: what ALGD logs beside OmniSafe's SAC keys (and the plugin's calibration keys)
ALGD_KEYS = (
    'Metrics/Lambda',
    'Metrics/FeasibleFrac',
    'Metrics/ViolationMean',
    'Value/cost_risk',
    'Loss/Loss_score',
)


class ALGD(StatewiseOffPolicy):
    r"""ALGD (Wenxuan et al., "How Does the Lagrangian Guide Safe Reinforcement Learning through
    Diffusion Models?", ICML 2026), its VE-SDE variant.

    Each gradient step, on one replay batch (``ALGDAgent.update_parameters``):

    1. twin reward critics toward ``r + gamma (1 - done) min_i Qbar_i(s', a')`` with
       ``a' ~ pi(s')`` (no entropy term), and each of the ``E`` cost critics toward its own target
       (:func:`~omnisafe_alam.core.diffusion.ensemble_cost_target`); one backward pass;
    2. actor: the energy :func:`~omnisafe_alam.core.diffusion.augmented_energy` at the chain's
       final action ``a_0``, back-propagated through every reverse step, plus ``score_coef`` times
       the MSE of the score head at a uniformly drawn step ``tau`` against the Monte Carlo score
       :func:`~omnisafe_alam.core.diffusion.mc_score_target` of ``exp(-L_A / beta)`` (``N``
       samples around ``a_tau``; ``score_coef``, ``N`` and ``beta`` in ``model_cfgs.diffusion``); the energy's cost term is the ensemble's mean + ``k`` std
       (:func:`~omnisafe_alam.core.diffusion.ensemble_risk`) against the target ``h``;
    3. the multiplier: one Adam step on ``log lambda`` of
       :func:`~omnisafe_alam.core.diffusion.multiplier_loss` at the batch's own actions
       (``algd_cfgs.dual_actions: buffer``, the reference) or at the policy's (``policy``);
    4. every ``target_update_freq``-th step, Polyak averaging of both critics' targets.

    ``h`` is ``algd_cfgs.cost_target``, or with 0 there the reference's
    :func:`~omnisafe_alam.core.diffusion.algd_cost_target` of the episode cost limit. A state is
    feasible for ALGD when ``Qbar_c(s, a) <= h`` at a policy action: that is its region test
    (``Metrics/FeasibleFrac``, ``Calibration/*``, the risk maps and the known-answer scores).
    """

    _actor_critic: ALGDActorCritic

    # ------------------------------------------------------------------ set-up
    def _init_model(self) -> None:
        algd = self._cfgs.algd_cfgs
        self._cfgs.model_cfgs.critic['num_critics'] = 2
        self._actor_critic = ALGDActorCritic(
            obs_space=self._env.observation_space,
            act_space=self._env.action_space,
            model_cfgs=self._cfgs.model_cfgs,
            epochs=self._epochs,
            ensemble_size=algd.ensemble_size,
            cost_lr=algd.cost_lr,
        ).to(self._device)

    def _init(self) -> None:
        super()._init()
        algd = self._cfgs.algd_cfgs
        self._h = cost_target(self._cfgs)
        self._multiplier = ScalarMultiplier(algd.lambda_init).to(self._device)
        self._multiplier_optimizer = optim.Adam(self._multiplier.parameters(), lr=algd.multiplier_lr)

    def _init_log(self) -> None:
        super()._init_log()
        for key in ALGD_KEYS:
            self._logger.register_key(key)
        self._logger.log(f'ALGD: cost target h = {self._h:.4g} (Qbar_c <= h is the region test)', 'cyan')

    def _risk_settings(self) -> dict[str, Any]:
        algd = self._cfgs.algd_cfgs
        return {
            'risk_fn': self._risk_no_grad,
            'kind': 'discounted_cost',
            'indicator': algd.cost_indicator,
            'window': algd.calibration_window,
        }

    def _checkpoint_items(self) -> dict[str, Any]:
        return {'cost_ensemble': self._actor_critic.cost_critic, 'lagrange_multiplier': self._multiplier}

    def _critics(self) -> tuple[nn.Module, ...]:
        return (self._actor_critic.reward_critic, self._actor_critic.cost_critic)

    # ------------------------------------------------------------ estimates
    def _cost_risk(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The ensemble's pessimistic cost value ``mean + k std``, ``(B,)``."""
        q_c = torch.stack(self._actor_critic.cost_critic(obs, action))
        return D.ensemble_risk(q_c, self._cfgs.algd_cfgs.ensemble_std)

    def _energy(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(L_A, min Q, Qbar_c)`` at ``(obs, action)``, each ``(B,)``."""
        q1, q2 = self._actor_critic.reward_critic(obs, action)
        risk = self._cost_risk(obs, action)
        energy = D.augmented_energy(q1, q2, risk, self._multiplier().detach(), self._cfgs.algd_cfgs.rho, self._h)
        return energy, torch.min(q1, q2), risk

    def _risk_no_grad(self, obs: torch.Tensor) -> torch.Tensor:
        """``Qbar_c`` at one policy sample per state (the adapter's risk estimate)."""
        with torch.no_grad():
            return self._cost_risk(obs, self._actor_critic.actor.predict(obs, deterministic=False))

    # ------------------------------------------------------------ updates
    def _cost(self, cost: torch.Tensor) -> torch.Tensor:
        return (cost > 0).float() if self._cfgs.algd_cfgs.cost_indicator else cost

    def _update(self) -> None:
        """Critics, actor and multiplier every step (``policy_delay``: the actor and multiplier
        every that many), the targets every ``algd_cfgs.target_update_freq``-th step."""
        algo, algd = self._cfgs.algo_cfgs, self._cfgs.algd_cfgs
        for _ in range(self._updates_per_phase):
            data = self._buf.sample_batch()
            self._update_count += 1
            self._update_critics(data['obs'], data['act'], data['reward'], data['cost'], data['done'], data['next_obs'])
            if self._update_count % algo.policy_delay == 0:
                self._update_actor(data['obs'], data['act'])
            if self._update_count % algd.target_update_freq == 0:
                self._actor_critic.polyak_update(algo.polyak)

    def _update_critics(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        cost: torch.Tensor,
        done: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> None:
        """Step 1 of the class doc: both regressions in one backward pass (they share no
        parameters), the policy's next action drawn once for both targets as the reference."""
        ac = self._actor_critic
        gamma = self._cfgs.algo_cfgs.gamma
        with torch.no_grad():
            next_action = ac.actor.predict(next_obs, deterministic=False)
            next_q = torch.min(*ac.target_reward_critic(next_obs, next_action))
            reward_target = reward + gamma * (1 - done) * next_q
            cost_target = D.ensemble_cost_target(
                self._cost(cost), done, torch.stack(ac.target_cost_critic(next_obs, next_action)), gamma,
            )
        q1, q2 = ac.reward_critic(obs, action)
        reward_loss = nn.functional.mse_loss(q1, reward_target) + nn.functional.mse_loss(q2, reward_target)
        q_c = torch.stack(ac.cost_critic(obs, action))
        cost_loss = nn.functional.mse_loss(q_c, cost_target)
        _check_finite('reward critic loss', reward_loss)
        _check_finite('cost ensemble loss', cost_loss)
        ac.reward_critic_optimizer.zero_grad()
        ac.cost_critic_optimizer.zero_grad()
        (reward_loss + cost_loss).backward()
        max_norm = self._cfgs.algo_cfgs.max_grad_norm
        for module, optimizer in ((ac.reward_critic, ac.reward_critic_optimizer), (ac.cost_critic, ac.cost_critic_optimizer)):
            if max_norm:
                clip_grad_norm_(self._params(module), max_norm)
            optimizer.step()
        self._logger.store(
            {
                'Loss/Loss_reward_critic': reward_loss.item(),
                'Value/reward_critic': q1.mean().item(),
                'Loss/Loss_cost_critic': cost_loss.item(),
                'Value/cost_critic': q_c.mean().item(),
            },
        )

    def _score_target(self, obs: torch.Tensor, a_tau: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """The Monte Carlo score of ``exp(-L_A / beta)`` at ``(s, a_tau)``
        (:func:`~omnisafe_alam.core.diffusion.mc_score_around`)."""
        diffusion = self._cfgs.model_cfgs.diffusion
        many = obs.repeat_interleave(diffusion.score_samples, dim=0)
        return D.mc_score_around(
            lambda act: self._energy(many, act)[0],
            a_tau,
            self._actor_critic.actor.sigmas[tau],
            diffusion.score_samples,
            diffusion.beta,
        )

    def _update_actor(self, obs: torch.Tensor, buffer_action: torch.Tensor | None = None) -> None:  # type: ignore[override]
        """Steps 2 and 3 of the class doc, the critics frozen."""
        actor = self._actor_critic.actor
        with self._frozen_critics():
            action, a_tau, tau = actor.sample(obs, record_step=True)
            energy, q, risk = self._energy(obs, action)
            energy_loss = energy.mean()
            target = self._score_target(obs, a_tau, tau)
            score_loss = nn.functional.mse_loss(actor.score(obs, a_tau, tau), target)
            loss = energy_loss + self._cfgs.model_cfgs.diffusion.score_coef * score_loss
            _check_finite('ALGD policy loss', loss)
            self._actor_critic.actor_optimizer.zero_grad()
            loss.backward()
        if self._cfgs.algo_cfgs.max_grad_norm:
            clip_grad_norm_(self._params(actor), self._cfgs.algo_cfgs.max_grad_norm)
        self._actor_critic.actor_optimizer.step()

        with torch.no_grad():
            at_buffer = self._cfgs.algd_cfgs.dual_actions == 'buffer' and buffer_action is not None
            taken = buffer_action if at_buffer else action.detach()
            risk_taken = self._cost_risk(obs, taken)
        lam_loss = D.multiplier_loss(self._multiplier(), self._h, risk_taken)
        self._multiplier_optimizer.zero_grad()
        lam_loss.backward()
        self._multiplier_optimizer.step()
        self._logger.store(
            {
                'Loss/Loss_pi': loss.item(),
                'Loss/Loss_score': score_loss.item(),
                'Value/alpha': 0.0,
                'Metrics/Lambda': self._multiplier().item(),
                'Metrics/FeasibleFrac': (risk_taken <= self._h).float().mean().item(),
                'Metrics/ViolationMean': (risk_taken - self._h).clamp(min=0.0).mean().item(),
                'Value/cost_risk': risk_taken.mean().item(),
            },
        )

    def _log_when_not_update(self) -> None:
        super()._log_when_not_update()
        self._logger.store({key: 0.0 for key in ALGD_KEYS} | {'Metrics/Lambda': self._multiplier().item()})


def cost_target(cfgs: Any) -> float:
    """ALGD's ``h`` from a run config (a dict or OmniSafe's ``Config``): ``algd_cfgs.cost_target``
    if positive, else :func:`~omnisafe_alam.core.diffusion.algd_cost_target` of
    ``algd_cfgs.cost_limit`` over ``algd_cfgs.episode_length`` steps at ``algo_cfgs.gamma``."""
    algd, gamma = cfgs['algd_cfgs'], float(cfgs['algo_cfgs']['gamma'])
    if float(algd['cost_target']) > 0:
        return float(algd['cost_target'])
    return D.algd_cost_target(float(algd['cost_limit']), gamma, int(algd['episode_length']))
