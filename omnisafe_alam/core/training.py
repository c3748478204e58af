"""The training machinery every plugin algorithm shares (SAC-FPI included).

:class:`StatewiseOffPolicy`: OmniSafe's SAC with the plugin's fixed off-policy adapter, config
validation before anything is built, risk calibration, the copy of OmniSafe's ``learn`` loop with
signal handling, full-state save / load, and fused optimizers.
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

from omnisafe_alam.core import functional as F
from omnisafe_alam.core.models import NonNegativeCritic
from omnisafe_alam.glue import checkpoint as ckpt
from omnisafe_alam.glue.adapter import CALIBRATION_KEYS, StatewiseOffPolicyAdapter
from omnisafe_alam.glue.config import validate_run_cfgs
from omnisafe_alam.glue.defaults import load_defaults

__all__ = ['StatewiseOffPolicy']


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
    #: least gradient weight of a softplus cost head's samples (``alam_cfgs.cost_critic_min_slope``)
    _cost_min_slope: float = 0.0
    #: std of the noise on the stored action in the cost critics' regression (``alam_cfgs.cost_critic_action_noise``)
    _cost_action_noise: float = 0.0

    def _cost_critic_action(self, action: torch.Tensor) -> torch.Tensor:
        """The action the cost critics regress at: the stored one, or with ``alam_cfgs.cost_critic_action_noise``
        that action plus Gaussian noise, clipped to the actor's ``[-1, 1]`` box
        (:func:`~omnisafe_alam.core.functional.smoothed_action`). No draw at 0, so the random
        stream, and every number, is the paper's path's."""
        if self._cost_action_noise <= 0:
            return action
        return F.smoothed_action(action, torch.randn_like(action), self._cost_action_noise)

    def _twin_loss(
        self,
        name: str,
        critic: nn.Module,
        obs: torch.Tensor,
        action: torch.Tensor,
        target: torch.Tensor,
        logit_floor: float = -math.inf,
        min_slope: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MSE of twin critics toward ``target`` summed over the twins (plus OmniSafe's optional
        weight norm, ``use_critic_norm``, and for a softplus head with a finite ``logit_floor``
        :func:`~omnisafe_alam.core.functional.logit_floor_penalty`), and the first twin's values.
        With ``min_slope > 0`` a softplus head takes the gradient of
        :func:`~omnisafe_alam.core.functional.bounded_slope_loss` instead of the MSE's; the loss
        returned for the log is still the MSE's value (plus the floor's).
        Stops at a non-finite loss, naming it."""
        softplus_head = isinstance(critic, NonNegativeCritic)
        if softplus_head and (logit_floor > -math.inf or min_slope > 0.0):
            pre = critic.pre_activations(obs, action)
            q1, q2 = (nn.functional.softplus(z) for z in pre)
            floor_loss = F.logit_floor_penalty(torch.stack(pre), logit_floor)
        else:
            q1, q2 = critic(obs, action)
            floor_loss = None
        loss = nn.functional.mse_loss(q1, target) + nn.functional.mse_loss(q2, target)
        if softplus_head and min_slope > 0.0:
            surrogate = F.bounded_slope_loss(torch.stack(pre), target, min_slope)
            loss = loss.detach() + (surrogate - surrogate.detach())
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

    @property
    def _target_temperature(self) -> float:
        """The temperature in the soft target, in the reward critics' units: :attr:`_temperature`."""
        return self._temperature

    @property
    def _has_density(self) -> bool:
        """Whether the actor has a log-density (SAC's Gaussian); a diffusion actor has none, so
        its algorithms have no entropy term and no temperature step."""
        return self._cfgs.model_cfgs.actor_type != 'diffusion'

    def _critic_reward(self, reward: torch.Tensor) -> torch.Tensor:
        """The reward in the reward critics' units (as it is, here)."""
        return reward

    def _reward_critic_target(self, reward: torch.Tensor, done: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """SAC's soft target (OmniSafe's ``SAC._update_reward_critic``, the same operations), on
        :meth:`_critic_reward` with :attr:`_target_temperature`."""
        with torch.no_grad():
            actor = self._actor_critic.actor
            next_action = actor.predict(next_obs, deterministic=False)
            next_q1, next_q2 = self._actor_critic.target_reward_critic(next_obs, next_action)
            next_q = torch.min(next_q1, next_q2)
            if self._has_density:
                next_q = next_q - actor.log_prob(next_action) * self._target_temperature
            return self._critic_reward(reward) + self._cfgs.algo_cfgs.gamma * (1 - done) * next_q

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
        loss, q1 = self._twin_loss(
            name, critic, obs, self._cost_critic_action(action), target, self._cost_logit_floor, self._cost_min_slope,
        )
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
        cost_loss, cost_q1 = self._twin_loss(
            name, cost_critic, obs, self._cost_critic_action(action), cost_target, self._cost_logit_floor,
            self._cost_min_slope,
        )
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
        if not self._has_density:
            # no entropy term, so no temperature: alpha is logged as the 0 it effectively is
            self._logger.store({'Value/alpha': 0.0})
            if self._cfgs.algo_cfgs.auto_alpha:
                self._logger.store({'Loss/alpha_loss': 0.0})
            return
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
    #: logged keys that a checkpoint written before the plugin logged them may lack: resuming it
    #: leaves them unlogged (:func:`~omnisafe_alam.glue.checkpoint.load_logger_state`)
    _optional_log_keys: tuple[str, ...] = ()

    def _env_steps(self, sample_step: int) -> int:
        """Environment steps taken before sample step ``sample_step`` (all envs together)."""
        return sample_step * self._update_cycle * self._cfgs.train_cfgs.vector_env_nums

    def learn(self) -> tuple[float, float, float]:
        """OmniSafe's training loop (``DDPG.learn``, the same rows) with full checkpoints.

        Differences: a full checkpoint (:mod:`omnisafe_alam.glue.checkpoint`) beside OmniSafe's every
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
        """Everything :meth:`learn` needs to continue (see :mod:`omnisafe_alam.glue.checkpoint`)."""
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
        dropped = ckpt.load_logger_state(self._logger, state['logger'], self._optional_log_keys)
        if dropped:
            self._logger.log(f'NOTE: this run began before the plugin logged {dropped}; it goes on without them', 'yellow')
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
