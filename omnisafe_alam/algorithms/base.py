"""What the plugin's algorithms share.

:class:`StatewiseOffPolicy`: the fixed off-policy adapter, config validation before anything is
built, risk calibration and a final checkpoint (every algorithm, SAC-FPI included).
:class:`StatewiseSAC`: the Lagrangian family on top of it: twin cost critics, ``F_hat``, the
multiplier and the dual cycle.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import time
from typing import Any, Iterator

import torch
from omnisafe.algorithms.off_policy.sac import SAC
from torch import nn, optim
from torch.nn.utils.clip_grad import clip_grad_norm_

from omnisafe_alam import checkpoint as ckpt
from omnisafe_alam import functional as F
from omnisafe_alam.adapter import CALIBRATION_KEYS, StatewiseOffPolicyAdapter
from omnisafe_alam.config import validate_run_cfgs
from omnisafe_alam.models import DualState, MultiplierNet, NonNegativeCritic, StatewiseActorQCritic
from omnisafe_alam.registration import load_defaults

__all__ = ['StatewiseOffPolicy', 'StatewiseSAC']

#: multiplier quantiles logged after every dual cycle
_QUANTILES = (0.1, 0.5, 0.9)
_QUANTILE_NAMES = ('Q10', 'Q50', 'Q90')
#: norms of the actor-parameter gradients of the policy loss's three terms (every dual cycle)
_GRAD_KEYS = ('Actor/GradNormQ', 'Actor/GradNormEntropy', 'Actor/GradNormPenalty')


class StatewiseOffPolicy(SAC):
    """SAC with the plugin's adapter and checks; a subclass says what its risk signal is.

    Subclasses implement :meth:`_risk_settings` (the estimate scored at episode starts and the
    realised quantity it is compared with, see :meth:`StatewiseOffPolicyAdapter.configure_risk`).
    """

    def _init_env(self) -> None:
        """Validate the plugin's config, then build the fixed adapter (see its doc)."""
        validate_run_cfgs(self._cfgs, load_defaults(self._cfgs.algo, self._env_id))
        self._env = StatewiseOffPolicyAdapter(
            self._env_id,
            self._cfgs.train_cfgs.vector_env_nums,
            self._seed,
            self._cfgs,
        )
        # Same bookkeeping as OmniSafe's DDPG._init_env, which we cannot call without also
        # building its (hanging for vector envs) adapter.
        num_envs = self._cfgs.train_cfgs.vector_env_nums
        steps_per_epoch = self._cfgs.algo_cfgs.steps_per_epoch
        total_steps = int(self._cfgs.train_cfgs.total_steps)
        if steps_per_epoch % num_envs:
            raise ValueError(
                f'algo_cfgs.steps_per_epoch={steps_per_epoch} must be divisible by '
                f'train_cfgs.vector_env_nums={num_envs}',
            )
        if total_steps % steps_per_epoch:
            raise ValueError(
                f'train_cfgs.total_steps={total_steps} must be a multiple of '
                f'algo_cfgs.steps_per_epoch={steps_per_epoch}',
            )
        self._epochs = total_steps // steps_per_epoch
        self._epoch = 0
        self._steps_per_epoch = steps_per_epoch // num_envs
        self._update_cycle = self._cfgs.algo_cfgs.update_cycle
        if self._steps_per_epoch % self._update_cycle:
            raise ValueError(
                f'steps per epoch per env ({self._steps_per_epoch}) must be divisible by '
                f'algo_cfgs.update_cycle={self._update_cycle}',
            )
        self._samples_per_epoch = self._steps_per_epoch // self._update_cycle
        self._update_count = 0

    def _init(self) -> None:
        super()._init()
        self._env.configure_risk(**self._risk_settings())
        algo = self._cfgs.algo_cfgs
        num_envs = self._cfgs.train_cfgs.vector_env_nums
        #: gradient steps per gradient phase (see ``algo_cfgs.keep_update_ratio``)
        self._updates_per_phase = algo.update_iters
        if num_envs > 1 and algo.keep_update_ratio:
            # OmniSafe's vector buffer samples batch_size rows *per env* and the loop takes
            # update_iters steps per vector step: N envs would mean an N-times larger batch and
            # N-times fewer gradient steps per env step (and a dual cycle N-times rarer in env
            # steps). Keep one env's batch and ratio instead.
            if algo.batch_size % num_envs:
                raise ValueError(
                    f'algo_cfgs.batch_size={algo.batch_size} must be divisible by '
                    f'train_cfgs.vector_env_nums={num_envs} with algo_cfgs.keep_update_ratio',
                )
            self._buf._batch_size = algo.batch_size // num_envs  # noqa: SLF001
            self._updates_per_phase = algo.update_iters * num_envs

    def _risk_settings(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`StatewiseOffPolicyAdapter.configure_risk`."""
        raise NotImplementedError

    def _critics(self) -> tuple[nn.Module, ...]:
        """The critics whose weights the policy loss reads but never trains (frozen there)."""
        raise NotImplementedError

    def _frozen_critics(self) -> contextlib.AbstractContextManager[None]:
        """:meth:`_critics` frozen for the actor step: no (discarded) weight gradients through
        them, which saves a large part of the step. The parameter list is collected once."""
        if getattr(self, '_critic_params', None) is None:
            self._critic_params = [p for m in self._critics() for p in m.parameters() if p.requires_grad]
        return _frozen(self._critic_params)

    def _use_fast_optimizers(self) -> None:
        """Every Adam steps all its parameters in one fused kernel (others: ``foreach``).

        PyTorch picks the per-tensor loop on CPU by default. The fused kernel computes Adam's
        update in one pass; its float32 results differ from the loop's in the last bits
        (``tests/test_speed.py`` bounds the difference), which is why runs made before it do not
        reproduce bit for bit. Where fused kernels are unsupported, the ``foreach`` path (same
        floats as the loop) is used.
        """
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        fused_devices = _get_fused_kernels_supported_devices()
        for optimizer in _training_parts(self)[1].values():
            for group in optimizer.param_groups:
                fused = isinstance(optimizer, (optim.Adam, optim.AdamW)) and all(
                    p.device.type in fused_devices and p.is_floating_point() for p in group['params']
                )
                group['fused'] = fused or None
                group['foreach'] = not fused

    def _checkpoint_items(self) -> dict[str, Any]:
        """Modules saved in every checkpoint beside the actor (and the observation normaliser)."""
        raise NotImplementedError

    def _init_log(self) -> None:
        """OmniSafe's keys and checkpoint, extended by :meth:`_checkpoint_items`, plus the keys
        every plugin algorithm logs: ``Metrics/EpUnsafeSteps`` and ``Calibration/*``."""
        self._resume = ckpt.resuming()
        #: buffer rows needed before updates (only a resume without the buffer waits for them)
        self._refill = 0
        with ckpt.resumed_logger(self._resume, self._cfgs) if self._resume else contextlib.nullcontext():
            super()._init_log()
        what_to_save: dict[str, Any] = {'pi': self._actor_critic.actor, **self._checkpoint_items()}
        if self._cfgs.algo_cfgs.obs_normalize:
            what_to_save['obs_normalizer'] = self._env.save()['obs_normalizer']
        self._logger.setup_torch_saver(what_to_save)
        if self._resume is None:
            self._logger.torch_save()
        self._logger.register_key('Metrics/EpUnsafeSteps', window_length=50)
        for key in CALIBRATION_KEYS:
            self._logger.register_key(key)
        self._use_fast_optimizers()

    # ------------------------------------------------------------ gradient step
    def _cost_critic_target(
        self,
        cost: torch.Tensor,
        done: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> tuple[str, nn.Module, optim.Optimizer, torch.Tensor]:
        """``(name, twin critics, their optimizer, regression target)`` of the cost-critic slot."""
        raise NotImplementedError

    #: logit below which a softplus cost head is pulled back (``alam_cfgs.cost_critic_floor``)
    _cost_logit_floor: float = -math.inf

    def _twin_loss(
        self,
        name: str,
        critic: nn.Module,
        obs: torch.Tensor,
        action: torch.Tensor,
        target: torch.Tensor,
        logit_floor: float = -math.inf,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MSE of twin critics toward ``target`` summed over the twins (plus OmniSafe's optional
        weight norm, ``use_critic_norm``, and for a softplus head with a finite ``logit_floor``
        :func:`~omnisafe_alam.functional.logit_floor_penalty`), and the first twin's values.
        Stops at a non-finite loss, naming it."""
        if isinstance(critic, NonNegativeCritic) and logit_floor > -math.inf:
            pre = critic.pre_activations(obs, action)
            q1, q2 = (nn.functional.softplus(z) for z in pre)
            floor_loss = F.logit_floor_penalty(torch.stack(pre), logit_floor)
        else:
            q1, q2 = critic(obs, action)
            floor_loss = None
        loss = nn.functional.mse_loss(q1, target) + nn.functional.mse_loss(q2, target)
        if floor_loss is not None:
            loss = loss + floor_loss
        if self._cfgs.algo_cfgs.use_critic_norm:
            for param in critic.parameters():
                loss += param.pow(2).sum() * self._cfgs.algo_cfgs.critic_norm_coeff
        _check_finite(name, loss)
        return loss, q1

    @property
    def _temperature(self) -> float:
        """The temperature of the soft target and the policy loss: SAC's alpha here."""
        return self._alpha

    def _reward_critic_target(self, reward: torch.Tensor, done: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """SAC's soft target (OmniSafe's ``SAC._update_reward_critic``, the same operations)."""
        with torch.no_grad():
            actor = self._actor_critic.actor
            next_action = actor.predict(next_obs, deterministic=False)
            next_logp = actor.log_prob(next_action)
            next_q1, next_q2 = self._actor_critic.target_reward_critic(next_obs, next_action)
            next_q = torch.min(next_q1, next_q2) - next_logp * self._temperature
            return reward + self._cfgs.algo_cfgs.gamma * (1 - done) * next_q

    def _update_cost_critic(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        cost: torch.Tensor,
        done: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> None:
        """Reference path: one regression step of the cost-critic slot on its own.

        :meth:`_update` runs :meth:`_update_critics` instead; this step (with OmniSafe's
        ``_update_reward_critic`` before it) is what the test of the fast path compares with.
        """
        name, critic, optimizer, target = self._cost_critic_target(cost, done, next_obs)
        loss, q1 = self._twin_loss(name, critic, obs, action, target, self._cost_logit_floor)
        optimizer.zero_grad()
        loss.backward()
        if self._cfgs.algo_cfgs.max_grad_norm:
            clip_grad_norm_(critic.parameters(), self._cfgs.algo_cfgs.max_grad_norm)
        optimizer.step()
        self._logger.store({'Loss/Loss_cost_critic': loss.item(), 'Value/cost_critic': q1.mean().item()})

    def _update_critics(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        cost: torch.Tensor,
        done: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> None:
        """Both critic regressions in one backward pass: the same numbers, bit for bit, as
        OmniSafe's ``_update_reward_critic`` followed by :meth:`_update_cost_critic`.

        The two losses share no parameters and neither target reads the other's critics, so
        the gradient of their sum is each loss's own gradient (times exactly 1.0), and the
        targets draw their policy samples in the same order as the two separate steps.
        """
        reward_target = self._reward_critic_target(reward, done, next_obs)
        name, cost_critic, cost_optimizer, cost_target = self._cost_critic_target(cost, done, next_obs)
        reward_critic = self._actor_critic.reward_critic
        reward_optimizer = self._actor_critic.reward_critic_optimizer
        reward_loss, reward_q1 = self._twin_loss('reward critic loss', reward_critic, obs, action, reward_target)
        cost_loss, cost_q1 = self._twin_loss(name, cost_critic, obs, action, cost_target, self._cost_logit_floor)
        reward_optimizer.zero_grad()
        cost_optimizer.zero_grad()
        (reward_loss + cost_loss).backward()
        max_norm = self._cfgs.algo_cfgs.max_grad_norm
        for params, optimizer in ((self._params(reward_critic), reward_optimizer), (self._params(cost_critic), cost_optimizer)):
            if max_norm:
                clip_grad_norm_(params, max_norm)
            optimizer.step()
        self._logger.store(
            {
                'Loss/Loss_reward_critic': reward_loss.item(),
                'Value/reward_critic': reward_q1.mean().item(),
                'Loss/Loss_cost_critic': cost_loss.item(),
                'Value/cost_critic': cost_q1.mean().item(),
            },
        )

    def _params(self, module: nn.Module) -> list[nn.Parameter]:
        """A module's parameters, listed once (walking modules every step is measurable)."""
        cache: dict[int, list[nn.Parameter]] = self.__dict__.setdefault('_param_lists', {})
        if id(module) not in cache:
            cache[id(module)] = list(module.parameters())
        return cache[id(module)]

    def _update(self) -> None:
        """OmniSafe's ``DDPG._update`` with :meth:`_update_critics` (one backward for both), and
        ``algo_cfgs.keep_update_ratio``'s number of steps with vector envs (see :meth:`_init`)."""
        algo = self._cfgs.algo_cfgs
        for _ in range(self._updates_per_phase):
            data = self._buf.sample_batch()
            self._update_count += 1
            self._update_critics(data['obs'], data['act'], data['reward'], data['cost'], data['done'], data['next_obs'])
            if self._update_count % algo.policy_delay == 0:
                self._update_actor(data['obs'])
                self._actor_critic.polyak_update(algo.polyak)

    def _update_actor(self, obs: torch.Tensor) -> None:
        """SAC's actor and temperature steps (OmniSafe's, the same numbers), critics frozen.

        The critics' parameters are frozen during the actor step: the policy loss only needs
        gradients with respect to the actor, and skipping the (discarded) critic weight
        gradients saves a large part of the step. The temperature's gradient
        ``-E[log pi + H_target]`` is written directly instead of a backward pass through
        ``-log_alpha * E[...]`` (the same float).
        """
        actor = self._actor_critic.actor
        with self._frozen_critics():
            loss = self._loss_pi(obs)
            self._actor_critic.actor_optimizer.zero_grad()
            loss.backward()
        if self._cfgs.algo_cfgs.max_grad_norm:
            clip_grad_norm_(self._params(actor), self._cfgs.algo_cfgs.max_grad_norm)
        self._actor_critic.actor_optimizer.step()
        self._logger.store({'Loss/Loss_pi': loss.item()})
        if self._cfgs.algo_cfgs.auto_alpha:
            with torch.no_grad():
                action = actor.predict(obs, deterministic=False)
                mean_term = (actor.log_prob(action) + self._target_entropy).mean()
                alpha_loss = -self._log_alpha * mean_term
            self._alpha_optimizer.zero_grad()
            self._log_alpha.grad = (-mean_term).expand_as(self._log_alpha).clone()
            self._alpha_optimizer.step()
            self._logger.store({'Loss/alpha_loss': alpha_loss.item()})
        self._logger.store({'Value/alpha': self._alpha})

    # ------------------------------------------------------------ training loop and full state
    #: counters (attributes) that belong to the training state; subclasses extend the tuple
    _state_attributes: tuple[str, ...] = ('_update_count',)

    def _env_steps(self, sample_step: int) -> int:
        """Environment steps taken before sample step ``sample_step`` (all envs together)."""
        return sample_step * self._update_cycle * self._cfgs.train_cfgs.vector_env_nums

    def learn(self) -> tuple[float, float, float]:
        """OmniSafe's training loop (``DDPG.learn``, the same rows) with full checkpoints.

        Differences: a full checkpoint (:mod:`omnisafe_alam.checkpoint`) beside OmniSafe's every
        ``save_model_freq`` epochs and at the end; SIGINT / SIGTERM finish the current sample
        step, save one and exit (status 128 + signal); a resumed run starts where its checkpoint
        stopped, mid-epoch if it was interrupted; and the final policy is always saved
        (OmniSafe saves only every ``save_model_freq`` epochs, so a shorter run kept nothing but
        the untrained epoch-0 policy).
        """
        cfgs = self._cfgs
        position = {'epoch': 0, 'sample_step': 0, 'rollout_time': 0.0, 'update_time': 0.0, 'elapsed': 0.0}
        if self._resume is not None:
            position.update(self._resume.state['position'])
        self._logger.log('INFO: Start training')
        start_time = time.time() - position['elapsed']
        step = self._env_steps(position['sample_step']) - 1
        with _stop_requests() as stop:
            for epoch in range(position['epoch'], self._epochs):
                self._epoch = epoch
                resumed_mid_epoch = epoch == position['epoch'] and position['sample_step'] > epoch * self._samples_per_epoch
                rollout_time = position['rollout_time'] if resumed_mid_epoch else 0.0
                update_time = position['update_time'] if resumed_mid_epoch else 0.0
                epoch_time = time.time()
                first = position['sample_step'] if resumed_mid_epoch else epoch * self._samples_per_epoch
                for sample_step in range(first, (epoch + 1) * self._samples_per_epoch):
                    step = self._env_steps(sample_step)
                    rollout_start = time.time()
                    if cfgs.algo_cfgs.use_exploration_noise:
                        self._actor_critic.actor.noise = cfgs.algo_cfgs.exploration_noise
                    self._env.rollout(
                        rollout_step=self._update_cycle,
                        agent=self._actor_critic,
                        buffer=self._buf,
                        logger=self._logger,
                        use_rand_action=(step <= cfgs.algo_cfgs.start_learning_steps),
                    )
                    rollout_time += time.time() - rollout_start
                    update_start = time.time()
                    if step > cfgs.algo_cfgs.start_learning_steps and self._buf.size >= self._refill:
                        self._update()
                    else:
                        self._log_when_not_update()
                    update_time += time.time() - update_start
                    if stop.signum is not None and sample_step + 1 < (epoch + 1) * self._samples_per_epoch:
                        self._save_state(epoch, sample_step + 1, rollout_time, update_time, time.time() - start_time)
                        self._exit_on(stop.signum)

                eval_start = time.time()
                self._env.eval_policy(
                    episode=cfgs.train_cfgs.eval_episodes,
                    agent=self._actor_critic,
                    logger=self._logger,
                )
                self._logger.store(
                    {
                        'Time/Update': update_time,
                        'Time/Rollout': rollout_time,
                        'Time/Evaluate': time.time() - eval_start,
                    },
                )
                if step > cfgs.algo_cfgs.start_learning_steps and cfgs.model_cfgs.linear_lr_decay:
                    self._actor_critic.actor_scheduler.step()
                self._logger.store(
                    {
                        'TotalEnvSteps': step + 1,
                        'Time/FPS': cfgs.algo_cfgs.steps_per_epoch / (time.time() - epoch_time),
                        'Time/Total': time.time() - start_time,
                        'Time/Epoch': time.time() - epoch_time,
                        'Train/Epoch': epoch,
                        'Train/LR': self._actor_critic.actor_scheduler.get_last_lr()[0],
                    },
                )
                self._logger.dump_tabular()
                last = epoch + 1 == self._epochs
                if (epoch + 1) % cfgs.logger_cfgs.save_model_freq == 0 or last:
                    self._logger.torch_save()
                state_freq = cfgs.checkpoint_cfgs.state_freq or cfgs.logger_cfgs.save_model_freq
                if (epoch + 1) % state_freq == 0 or last or stop.signum is not None:
                    self._save_state(epoch + 1, (epoch + 1) * self._samples_per_epoch, 0.0, 0.0, time.time() - start_time)
                if stop.signum is not None and not last:
                    self._exit_on(stop.signum)

        ep_ret = self._logger.get_stats('Metrics/EpRet')[0]
        ep_cost = self._logger.get_stats('Metrics/EpCost')[0]
        ep_len = self._logger.get_stats('Metrics/EpLen')[0]
        self._logger.close()
        self._env.close()
        return ep_ret, ep_cost, ep_len

    def _exit_on(self, signum: int) -> None:
        """Close the run after an interrupt's checkpoint and leave with status ``128 + signum``."""
        self._logger.log(
            f'Stopped by signal {signum}; full state saved. Continue with: '
            f'omnisafe-alam resume {self._logger.log_dir}',
            'yellow',
            bold=True,
        )
        self._logger.close()
        self._env.close()
        raise SystemExit(128 + signum)

    def _training_state(self) -> dict[str, Any]:
        """Everything :meth:`learn` needs to continue (see :mod:`omnisafe_alam.checkpoint`)."""
        modules, optimizers, schedulers = _training_parts(self)
        save = self._cfgs.checkpoint_cfgs
        return {
            'modules': {name: module.state_dict() for name, module in modules.items()},
            'optimizers': {name: opt.state_dict() for name, opt in optimizers.items()},
            'schedulers': {name: sched.state_dict() for name, sched in schedulers.items()},
            'log_alpha': self._log_alpha.detach().clone(),
            'attributes': {name: copy.deepcopy(getattr(self, name)) for name in self._state_attributes},
            'buffer': ckpt.buffer_state(self._buf) if save.save_buffer else None,
            'env': self._env.state_dict(),
            'rng': ckpt.rng_state(),
            'logger': ckpt.logger_state(self._logger),
        }

    def _load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_training_state` into this freshly built algorithm."""
        modules, optimizers, schedulers = _training_parts(self)
        for kind, live, saved in (
            ('modules', modules, state['modules']),
            ('optimizers', optimizers, state['optimizers']),
            ('schedulers', schedulers, state['schedulers']),
        ):
            if set(live) != set(saved):
                raise ckpt.CheckpointError(f'{kind} {sorted(live)} differ from the checkpoint\'s {sorted(saved)}')
            for name, obj in live.items():
                obj.load_state_dict(saved[name])
        self._use_fast_optimizers()
        with torch.no_grad():
            self._log_alpha.copy_(state['log_alpha'])
        for name, value in state['attributes'].items():
            setattr(self, name, value)
        if state['buffer'] is not None:
            ckpt.load_buffer_state(self._buf, state['buffer'])
        else:
            num_envs = self._cfgs.train_cfgs.vector_env_nums
            self._refill = max(1, self._cfgs.algo_cfgs.start_learning_steps // num_envs)
            self._logger.log(
                f'WARNING: the checkpoint holds no replay buffer; no updates until the policy has '
                f'collected {self._refill * num_envs} transitions again',
                'yellow',
            )
        position = state['position']['env_steps']
        if not self._env.load_state_dict(state['env'], reset_seed=self._seed + position):
            self._logger.log(
                f'NOTE: {self._env_id} cannot restore its simulator mid-episode: the episode in '
                f'progress restarts (reset seed {self._seed + position}); everything else is restored',
                'yellow',
            )
        ckpt.load_logger_state(self._logger, state['logger'])
        ckpt.set_rng_state(state['rng'])

    def _save_state(self, epoch: int, sample_step: int, rollout_time: float, update_time: float, elapsed: float) -> None:
        """Write a full checkpoint at this position (if ``checkpoint_cfgs.save_state``)."""
        save = self._cfgs.checkpoint_cfgs
        if not save.save_state:
            return
        env_steps = self._env_steps(sample_step)
        state = {
            'format': ckpt.FORMAT,
            'version': ckpt.VERSION,
            'config': self._cfgs.todict(),
            'position': {
                'epoch': epoch,
                'sample_step': sample_step,
                'env_steps': env_steps,
                'rollout_time': rollout_time,
                'update_time': update_time,
                'elapsed': elapsed,
            },
            **self._training_state(),
        }
        path = ckpt.state_path(self._logger.log_dir, env_steps)
        size = ckpt.save_state_file(path, state, save.keep_last)
        buffer = state['buffer']
        held = f"{buffer['size']} transitions per env" if buffer is not None else 'no replay buffer'
        self._logger.log(f'full checkpoint {path.name}: {size / 2**20:.1f} MiB ({held})', 'cyan')


class StatewiseSAC(StatewiseOffPolicy):
    r"""Base of SAC-ALaM, SAC-ALaM-GA, SAC-LagNet and ASAC (not registered itself).

    Deliberate departures from OmniSafe's :class:`SAC` (the paper, Sec. V):

    - **Twin cost critics**, trained toward
      :math:`y_\psi = c + \gamma(1-d)\min\{\mathrm{comb}_\beta(\bar Q^c_{\psi_1}, \bar Q^c_{\psi_2})(x', a'),
      c_{\max}/(1-\gamma)\}`, :math:`a' \sim \pi(\cdot|x')`: :math:`\beta = 1` is the paper's max,
      the default :math:`\beta = 0` their mean (``alam_cfgs.cost_target_pessimism``, see
      docs/algorithms.md); ``F_hat`` combines them the same way with its own
      ``alam_cfgs.f_hat_pessimism`` (paper: max; default: mean). OmniSafe has one cost critic and
      a deterministic next action.
    - The cost is the raw environment cost (``cost_normalize`` must be false), optionally
      clipped to the indicator :math:`\mathbf 1[c > 0]` (``alam_cfgs.cost_indicator``).
    - The policy loss is SAC's plus a variant-specific constraint penalty on
      :math:`g(x) = \hat F(x) - d` (see :meth:`_penalty`).
    - Every ``m_lambda`` policy steps, a dual cycle: ``n_dual`` multiplier steps
      (:meth:`_update_multiplier`), then the penalty schedule if the variant uses one.

    A variant defines :meth:`_penalty` and :meth:`_multiplier_loss` (or overrides
    :meth:`_update_multiplier`), and sets :attr:`_uses_penalty_schedule`.
    """

    _state_attributes = (
        *StatewiseOffPolicy._state_attributes,
        '_policy_steps',
        '_dual_stats',
        '_reward_ms',
        '_reward_ms_steps',
        '_infeasible_since',
    )
    #: whether rho follows the schedule of Sec. III-D after each dual cycle
    _uses_penalty_schedule: bool = True
    #: whether the variant has a state-wise multiplier network (False for ASAC)
    _statewise: bool = True

    _actor_critic: StatewiseActorQCritic
    _dual: DualState
    _multiplier_optimizer: optim.Optimizer | None

    # ------------------------------------------------------------------ set-up
    def _init_model(self) -> None:
        self._cfgs.model_cfgs.critic['num_critics'] = 2
        alam = self._cfgs.alam_cfgs
        multiplier = None
        if self._statewise:
            multiplier = MultiplierNet(
                obs_dim=self._env.observation_space.shape[0],  # type: ignore[index]
                hidden_sizes=alam.multiplier_hidden_sizes,
                activation=alam.multiplier_activation,
                output=alam.multiplier_output,
                max_value=alam.multiplier_max,
                init_value=alam.multiplier_init if alam.multiplier_init >= 0 else None,
            )
        self._actor_critic = StatewiseActorQCritic(
            obs_space=self._env.observation_space,
            act_space=self._env.action_space,
            model_cfgs=self._cfgs.model_cfgs,
            epochs=self._epochs,
            multiplier=multiplier,
            cost_output=alam.cost_critic_output,
        ).to(self._device)
        if alam.cost_polyak > 0:
            self._actor_critic.cost_tau = alam.cost_polyak
        if alam.cost_critic_output == 'softplus':
            self._cost_logit_floor = F.logit_floor(alam.cost_critic_floor * alam.d)

    def _init(self) -> None:
        super()._init()
        alam = self._cfgs.alam_cfgs
        self._dual = DualState(alam.rho_init, alam.lambda_init).to(self._device)
        #: policy steps between dual cycles and the multiplier's rate (``alam_cfgs.dual_rates``)
        self._m_lambda, self._multiplier_lr = alam.m_lambda, alam.multiplier_lr
        if alam.dual_rates == 'budget':
            self._m_lambda, self._multiplier_lr = F.budget_dual_rates(
                int(self._cfgs.train_cfgs.total_steps),
                alam.m_lambda,
                alam.multiplier_lr,
                alam.dual_rates_reference_steps,
                alam.dual_rates_m_lambda_min,
                alam.dual_rates_multiplier_lr_max,
            )
        self._multiplier_optimizer = None
        if self._actor_critic.multiplier is not None:
            self._multiplier_optimizer = optim.Adam(
                self._actor_critic.multiplier.parameters(),
                lr=self._multiplier_lr,
            )
        self._policy_steps = 0
        #: moving average of the batches' mean squared reward and its step count (penalty_scale)
        self._reward_ms = 0.0
        self._reward_ms_steps = 0
        #: gradient step of the first dual cycle of the current run of cycles with no feasible
        #: batch state (None: the last cycle had one); see ``alam_cfgs.infeasible_warning_steps``
        self._infeasible_since: int | None = None
        self._dual_stats: dict[str, float] = {
            'Loss/Loss_multiplier': 0.0,
            'Metrics/PenaltyScale': 1.0,
            **dict.fromkeys(_GRAD_KEYS, 0.0),
            'Metrics/Violation': 0.0,
            'Metrics/FeasibleFrac': 0.0,
            **{f'Metrics/Multiplier{name}': 0.0 for name in _QUANTILE_NAMES},
        }

    def _risk_settings(self) -> dict[str, Any]:
        alam = self._cfgs.alam_cfgs
        return {
            'risk_fn': self._f_hat_no_grad,
            'kind': 'discounted_cost',
            'indicator': alam.cost_indicator,
            'window': alam.calibration_window,
        }

    def _init_log(self) -> None:
        """Register the state-wise keys beside OmniSafe's SAC keys.

        +------------------------+---------------------------------------------------------+
        | Key                    | Meaning                                                 |
        +========================+=========================================================+
        | Metrics/EpUnsafeSteps  | steps with cost > 0 per episode                         |
        +------------------------+---------------------------------------------------------+
        | Metrics/MultiplierMean | batch mean of lambda(x) in the policy loss              |
        +------------------------+---------------------------------------------------------+
        | Metrics/MultiplierMax  | batch max of lambda(x) in the policy loss               |
        +------------------------+---------------------------------------------------------+
        | Metrics/Rho            | penalty factor rho                                      |
        +------------------------+---------------------------------------------------------+
        | Metrics/Violation      | violation metric v of the last dual cycle (Sec. III-D)  |
        +------------------------+---------------------------------------------------------+
        | Metrics/FeasibleFrac   | fraction of batch states with F_hat <= d (last cycle)   |
        +------------------------+---------------------------------------------------------+
        | Value/F_hat            | batch mean of F_hat(x) in the policy loss               |
        +------------------------+---------------------------------------------------------+
        | Loss/Loss_multiplier   | multiplier loss of the last dual step                   |
        +------------------------+---------------------------------------------------------+
        | Metrics/PenaltyScale   | weight of the penalty in the policy loss (the reward's  |
        |                        | RMS with ``penalty_scale: reward_rms``, else 1)         |
        +------------------------+---------------------------------------------------------+
        | Actor/GradNormQ,       | at the last dual cycle, the norm of the actor-parameter |
        | GradNormEntropy,       | gradient of each term of the policy loss alone: -Q,     |
        | GradNormPenalty        | alpha log pi, the (weighted) constraint penalty         |
        +------------------------+---------------------------------------------------------+
        | Metrics/MultiplierQ10, | 10%, 50% and 90% quantiles of lambda(x) over the batch  |
        | Q50, Q90               | of the last dual cycle, after its update                |
        +------------------------+---------------------------------------------------------+
        | Calibration/StartFHat  | over the last ``calibration_window`` episodes: F_hat at |
        | Calibration/StartCost  | the start state when the episode began, the realised    |
        | Calibration/StartBias  | discounted cost, their mean difference (> 0:            |
        | Calibration/           | pessimistic) and Spearman's rank correlation (see       |
        | StartRankCorr          | :meth:`StatewiseOffPolicyAdapter.calibration`)          |
        +------------------------+---------------------------------------------------------+
        """
        super()._init_log()
        for key in (
            'Metrics/MultiplierMean',
            'Metrics/MultiplierMax',
            'Metrics/Rho',
            'Value/F_hat',
            *self._dual_stats,
        ):
            self._logger.register_key(key)

    def _checkpoint_items(self) -> dict[str, Any]:
        return {**self._actor_critic.checkpoint_items(), 'dual': self._dual}

    def _critics(self) -> tuple[nn.Module, ...]:
        return (self._actor_critic.reward_critic, self._actor_critic.cost_critic)

    # ------------------------------------------------------------ estimates
    @property
    def _rho(self) -> float:
        return float(self._dual.rho)

    def _residual(self, obs: torch.Tensor) -> torch.Tensor:
        r"""Constraint residual :math:`g(x) = \hat F(x) - d`, shape ``(B,)``.

        The K actions are reparameterised samples drawn in one batched call, so under grad
        mode the gradient reaches the policy through ``F_hat``; callers wrap it in
        ``torch.no_grad()`` everywhere except the policy loss. With
        ``alam_cfgs.f_hat_policy: deterministic`` the one action is the policy's mean.
        """
        alam = self._cfgs.alam_cfgs
        actions = self._f_actions(obs)  # (K, B, A)
        q_c = self._actor_critic.cost_critic(obs.expand(actions.shape[0], *obs.shape), actions)
        return F.f_hat(torch.stack(q_c), alam.f_hat_pessimism) - alam.d

    def _f_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions at which ``F`` is evaluated: ``(K, B, A)`` policy samples, or ``(1, B, A)`` means."""
        if self._cfgs.alam_cfgs.f_hat_policy == 'deterministic':
            return self._actor_critic.actor.predict(obs, deterministic=True).unsqueeze(0)
        return self._actor_critic.actor(obs).rsample((self._cfgs.alam_cfgs.K,))

    def _f_hat_no_grad(self, obs: torch.Tensor) -> torch.Tensor:
        """``F_hat`` at observations, without gradient (the adapter's risk estimate)."""
        with torch.no_grad():
            return self._residual(obs) + self._cfgs.alam_cfgs.d

    def _multiplier_at(self, obs: torch.Tensor) -> torch.Tensor:
        """Multiplier at each state, ``(B,)``, with gradient to the multiplier network."""
        assert self._actor_critic.multiplier is not None
        return self._actor_critic.multiplier(obs)

    def _multiplier_uncapped(self, obs: torch.Tensor) -> torch.Tensor:
        """The multiplier network's output before ``multiplier_max``, ``(B,)``: what its losses train."""
        assert self._actor_critic.multiplier is not None
        return self._actor_critic.multiplier.uncapped(obs)

    # ------------------------------------------------------------ variant hooks
    def _penalty(self, lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Per-state constraint penalty of the policy loss (``lam`` detached, ``g`` not)."""
        raise NotImplementedError

    def _multiplier_loss(
        self,
        obs: torch.Tensor,
        g: torch.Tensor,
        frozen: nn.Module,
    ) -> torch.Tensor:
        """Loss of one multiplier step on a batch (``g`` and ``frozen`` carry no gradient)."""
        raise NotImplementedError

    # ------------------------------------------------------------ losses and updates
    def _cost_critic_target(
        self,
        cost: torch.Tensor,
        done: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> tuple[str, nn.Module, optim.Optimizer, torch.Tensor]:
        """The twin cost critics' pessimistic target (see class doc)."""
        if self._cfgs.alam_cfgs.cost_indicator:
            cost = (cost > 0).float()
        with torch.no_grad():
            next_action = self._f_actions(next_obs)[0]
            q_c_tp1 = self._actor_critic.target_cost_critic(next_obs, next_action)
            alam = self._cfgs.alam_cfgs
            gamma = self._cfgs.algo_cfgs.gamma
            target = F.cost_critic_target(
                cost,
                done,
                torch.stack(q_c_tp1),
                gamma,
                pessimism=alam.cost_target_pessimism,
                value_max=alam.cost_max / (1.0 - gamma) if alam.cost_max > 0 else math.inf,
            )
        return 'cost critic loss', self._actor_critic.cost_critic, self._actor_critic.cost_critic_optimizer, target

    def _loss_pi(self, obs: torch.Tensor) -> torch.Tensor:
        r"""SAC's policy loss plus the variant's constraint penalty (Eq. 16 for ALaM).

        .. math::

            L_\pi = \mathbb E_{\mathcal B}[\alpha' \log\pi(a|x) - \min_i Q_{\phi_i}(x,a)]
                    + s\, \mathbb E_{\mathcal B}[\mathrm{penalty}(\mathrm{sg}(\lambda(x)), g(x))]

        with :math:`s` the reward's RMS (:func:`~omnisafe_alam.functional.reward_rms`,
        ``alam_cfgs.penalty_scale: reward_rms``) or 1 (``none``, the paper), and
        :math:`\alpha'` the temperature (:attr:`_temperature`).
        """
        action = self._actor_critic.actor.predict(obs, deterministic=False)
        log_prob = self._actor_critic.actor.log_prob(action)
        q1, q2 = self._actor_critic.reward_critic(obs, action)
        entropy_term = (self._temperature * log_prob).mean()
        q_term = -torch.min(q1, q2).mean()

        g = self._residual(obs)
        with torch.no_grad():
            lam = self._multiplier_at(obs)
        penalty_term = self._penalty_scale * self._penalty(lam, g).mean()
        if self._dual_cycle_due(self._policy_steps + 1):
            self._measure_actor_gradients(q_term, entropy_term, penalty_term)
        loss = entropy_term + q_term + penalty_term
        _check_finite('policy loss', loss)
        self._logger.store(
            {
                'Metrics/MultiplierMean': lam.mean().item(),
                'Metrics/MultiplierMax': lam.max().item(),
                'Value/F_hat': (g.detach() + self._cfgs.alam_cfgs.d).mean().item(),
            },
        )
        return loss

    def _update_actor(self, obs: torch.Tensor) -> None:
        """SAC's actor and alpha step; every ``m_lambda`` policy steps, a dual cycle.

        The critics' parameters are frozen during the actor step: the policy loss only needs
        gradients with respect to the actor, and skipping the (discarded) critic weight
        gradients through the K-sample ``F_hat`` saves a large part of the step's time.
        No dual cycle runs until ``epoch > algo_cfgs.warmup_epochs``, exactly as OmniSafe's
        SACLag and SACPID gate their multiplier (so 0 still skips epoch 0).
        """
        super()._update_actor(obs)
        self._policy_steps += 1
        if self._dual_cycle_due():
            self._dual_cycle(obs)
        self._logger.store({'Metrics/Rho': self._rho, **self._dual_stats})

    def _dual_cycle_due(self, policy_steps: int | None = None) -> bool:
        """Whether policy step ``policy_steps`` (default: the one just taken) ends a dual period
        (:attr:`_m_lambda`, after warm-up)."""
        steps = self._policy_steps if policy_steps is None else policy_steps
        warmed_up = self._epoch > self._cfgs.algo_cfgs.warmup_epochs
        return warmed_up and steps % self._m_lambda == 0

    @property
    def _penalty_scale(self) -> float:
        """Weight of the constraint penalty in the policy loss (``alam_cfgs.penalty_scale``)."""
        alam = self._cfgs.alam_cfgs
        if alam.penalty_scale == 'none':
            return 1.0
        return F.reward_rms(self._reward_ms, self._reward_ms_steps, alam.penalty_scale_rate)

    @property
    def _temperature(self) -> float:
        """SAC's alpha; an auto-tuned one times the penalty weight under ``penalty_scale:
        reward_rms``, so that the tuned temperature, like the multiplier, meets a reward of unit
        RMS (OmniSafe starts it at 1 whatever the reward's scale). A fixed alpha is used as written
        (raw reward units, as OmniSafe's SAC, SACLag and SACPID use it)."""
        if self._cfgs.algo_cfgs.auto_alpha and self._cfgs.alam_cfgs.penalty_scale == 'reward_rms':
            return self._alpha * self._penalty_scale
        return self._alpha

    def _measure_actor_gradients(self, *terms: torch.Tensor) -> None:
        """Store the norm of each policy-loss term's own gradient in the actor's parameters
        (``-Q``, ``alpha log pi``, the weighted penalty; :data:`_GRAD_KEYS`). Run at the policy
        step that ends a dual cycle only: three extra backward passes every ``m_lambda`` steps."""
        params = self._params(self._actor_critic.actor)
        for key, term in zip(_GRAD_KEYS, terms):
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            norm = torch.sqrt(sum((grad.pow(2).sum() for grad in grads if grad is not None), torch.zeros(())))
            self._dual_stats[key] = norm.item()

    def _update_critics(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        cost: torch.Tensor,
        done: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> None:
        """The critics' step, then the reward's moving mean square (``alam_cfgs.penalty_scale``)."""
        super()._update_critics(obs, action, reward, cost, done, next_obs)
        alam = self._cfgs.alam_cfgs
        if alam.penalty_scale == 'reward_rms':
            batch_ms = reward.pow(2).mean().item()
            self._reward_ms = F.reward_rms_ema(self._reward_ms, batch_ms, alam.penalty_scale_rate)
            self._reward_ms_steps += 1

    def _dual_cycle(self, obs: torch.Tensor) -> None:
        """Multiplier update, then the penalty schedule (Algorithm 1, lines 12-19).

        The violation metric :math:`v^k` uses the multiplier :math:`\\lambda^k` of the cycle's
        start, before the update, and the residual under the current policy (Sec. III-D).
        """
        with torch.no_grad():
            g = self._residual(obs)
            v = F.violation_metric(self._multiplier_at(obs), self._aggregate(g), self._rho)
        self._dual_stats['Loss/Loss_multiplier'] = self._update_multiplier(obs)
        with torch.no_grad():
            lam = self._multiplier_at(obs).reshape(-1)
            quantiles = torch.quantile(lam, torch.tensor(_QUANTILES, dtype=lam.dtype, device=lam.device))
        self._dual_stats['Metrics/Violation'] = v
        self._dual_stats['Metrics/FeasibleFrac'] = (g <= 0).float().mean().item()
        self._dual_stats['Metrics/PenaltyScale'] = self._penalty_scale
        for name, value in zip(_QUANTILE_NAMES, quantiles.tolist()):
            self._dual_stats[f'Metrics/Multiplier{name}'] = value
        self._warn_if_infeasible(g)
        if self._uses_penalty_schedule:
            alam = self._cfgs.alam_cfgs
            self._dual.rho.fill_(F.penalty_step(self._rho, v, alam.sigma, alam.rho_max))

    def _warn_if_infeasible(self, g: torch.Tensor) -> None:
        """A warning in the log when no batch state of any dual cycle has been feasible for
        ``alam_cfgs.infeasible_warning_steps`` gradient steps (repeated each time that span
        passes again while it lasts)."""
        span = self._cfgs.alam_cfgs.infeasible_warning_steps
        if bool((g <= 0).any()):
            self._infeasible_since = None
            return
        if self._infeasible_since is None:
            self._infeasible_since = self._update_count
        lasted = self._update_count - self._infeasible_since
        if span and lasted >= span and lasted % span < self._m_lambda * self._cfgs.algo_cfgs.policy_delay:
            alam = self._cfgs.alam_cfgs
            lam = self._dual_stats
            self._logger.log(
                f'WARNING: no batch state has been feasible (F_hat <= d = {alam.d}) for {lasted} '
                f'gradient steps: F_hat batch median {float((g + alam.d).median()):.3g}, multiplier '
                f"Q10/Q50/Q90 {lam['Metrics/MultiplierQ10']:.3g}/{lam['Metrics/MultiplierQ50']:.3g}/"
                f"{lam['Metrics/MultiplierQ90']:.3g} (cap {alam.multiplier_max}), rho {self._rho:.3g}, "
                f'penalty weight {self._penalty_scale:.3g}. The policy is violating the state-wise '
                'constraint everywhere it goes; check d against the task\'s costs, or a reward so '
                'large that the penalty cannot balance it (alam_cfgs.penalty_scale: reward_rms)',
                'yellow',
            )

    def _aggregate(self, g: torch.Tensor) -> torch.Tensor:
        """The residual the multiplier answers to: per state here, aggregated in ASAC."""
        return g

    def _update_multiplier(self, obs: torch.Tensor) -> float:
        """``n_dual`` steps of :meth:`_multiplier_loss`; returns the last loss.

        ``frozen`` is a copy of the multiplier as it stood at the start of the cycle
        (:math:`\\lambda^k`), so every step regresses toward the same dual target. The first
        step uses the policy batch, later ones fresh replay batches.
        """
        net = self._actor_critic.multiplier
        assert net is not None and self._multiplier_optimizer is not None
        frozen = copy.deepcopy(net).requires_grad_(False)
        max_norm = self._cfgs.alam_cfgs.multiplier_max_grad_norm
        loss = torch.zeros(())
        for step in range(self._cfgs.alam_cfgs.n_dual):
            batch_obs = obs if step == 0 else self._buf.sample_batch()['obs']
            with torch.no_grad():
                g = self._residual(batch_obs)
            loss = self._multiplier_loss(batch_obs, g, frozen)
            _check_finite('multiplier loss', loss)
            self._multiplier_optimizer.zero_grad()
            loss.backward()
            if max_norm > 0:
                clip_grad_norm_(net.parameters(), max_norm)
            self._multiplier_optimizer.step()
        return loss.item()

    def _log_when_not_update(self) -> None:
        super()._log_when_not_update()
        self._logger.store(
            {
                'Metrics/MultiplierMean': 0.0,
                'Metrics/MultiplierMax': 0.0,
                'Value/F_hat': 0.0,
                'Metrics/Rho': self._rho,
                **self._dual_stats,
            },
        )


def _training_parts(algo: Any) -> tuple[dict[str, nn.Module], dict[str, optim.Optimizer], dict[str, Any]]:
    """The modules, optimizers and LR schedulers held by an algorithm or its actor-critic."""
    modules: dict[str, nn.Module] = {}
    optimizers: dict[str, optim.Optimizer] = {}
    schedulers: dict[str, Any] = {}
    for owner, prefix in ((algo, ''), (algo._actor_critic, 'actor_critic.')):
        for name, value in vars(owner).items():
            if isinstance(value, optim.Optimizer):
                optimizers[prefix + name] = value
            elif isinstance(value, optim.lr_scheduler.LRScheduler):
                schedulers[prefix + name] = value
            elif isinstance(value, nn.Module) and owner is algo:
                modules[name] = value
    return modules, optimizers, schedulers


class _StopRequests:
    """Remembers the first SIGINT / SIGTERM; a second one interrupts at once."""

    signum: int | None = None

    def handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


@contextlib.contextmanager
def _stop_requests() -> Iterator[_StopRequests]:
    """Catch SIGINT / SIGTERM while training (main thread only) so a checkpoint can be taken."""
    stop = _StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _frozen(params: list[nn.Parameter]) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on parameters (trainable ones)."""
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


def _check_finite(name: str, value: torch.Tensor) -> None:
    """Stop at the first non-finite loss, naming it, instead of training on NaNs."""
    if not math.isfinite(value.item()):
        raise FloatingPointError(
            f'{name} is {value.item()}: training diverged (check learning rates, '
            'alam_cfgs.rho_max and the environment cost)',
        )
