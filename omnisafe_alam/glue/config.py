"""Validation and coercion of the plugin's ``alam_cfgs`` (and SAC-FPI's ``fpi_cfgs``) key groups.

OmniSafe's ``--custom-cfgs`` parser hands values over half-parsed: ``1e-3``, ``-1`` and ``false``
stay strings and ``[64,64]`` becomes ``['64', '64']``. :func:`validate_alam_cfgs` coerces every
key of ``alam_cfgs`` to its declared type and checks its range, so a wrong value stops the run
before any environment is built, with a message that names the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    'ALAM_KEYS',
    'ALGD_KEYS',
    'DIFFUSION_KEYS',
    'CHECKPOINT_KEYS',
    'FPI_KEYS',
    'AlamConfigError',
    'coerce_like_defaults',
    'validate_alam_cfgs',
    'validate_fpi_cfgs',
    'validate_run_cfgs',
]


class AlamConfigError(ValueError):
    """A key of ``alam_cfgs`` (or a setting the plugin depends on) has a wrong type or value."""


def _to_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise AlamConfigError(f'{key} must be a number, got the bool {value!r}')
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise AlamConfigError(f'{key} must be a number, got {value!r}') from None
    if out != out or out in (float('inf'), float('-inf')):
        raise AlamConfigError(f'{key} must be finite, got {value!r}')
    return out


def _to_int(key: str, value: Any) -> int:
    number = _to_float(key, value)
    if number != int(number):
        raise AlamConfigError(f'{key} must be an integer, got {value!r}')
    return int(number)


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('true', '1', 'yes', 'on'):
        return True
    if text in ('false', '0', 'no', 'off'):
        return False
    raise AlamConfigError(f'{key} must be true or false, got {value!r}')


def _to_int_list(key: str, value: Any) -> list[int]:
    if isinstance(value, str):
        value = value.strip().strip('[]')
        value = [v for v in value.split(',') if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise AlamConfigError(f'{key} must be a non-empty list of integers, got {value!r}')
    return [_to_int(key, v) for v in value]


def _to_int_list_or_empty(key: str, value: Any) -> list[int]:
    if isinstance(value, str) and not value.strip().strip('[]').strip() or isinstance(value, (list, tuple)) and not value:
        return []
    return _to_int_list(key, value)


def _to_choice(*choices: str) -> Callable[[str, Any], str]:
    def convert(key: str, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise AlamConfigError(f'{key} must be one of {choices}, got {value!r}')
        return text

    return convert


@dataclass(frozen=True)
class _Key:
    convert: Callable[[str, Any], Any]
    check: Callable[[Any], bool]
    requirement: str


#: Every key of ``alam_cfgs``: converter, range check, and the requirement stated in errors.
ALAM_KEYS: dict[str, _Key] = {
    'd': _Key(_to_float, lambda v: v >= 0.0, 'must be >= 0 (tolerance on F_hat)'),
    'K': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (Monte Carlo actions for F_hat)'),
    'cost_indicator': _Key(_to_bool, lambda v: True, ''),
    'm_lambda': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (policy steps between dual cycles)'),
    'n_dual': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (multiplier steps per cycle)'),
    'rho_init': _Key(_to_float, lambda v: v > 0.0, 'must be > 0'),
    'rho_max': _Key(_to_float, lambda v: v > 0.0, 'must be > 0'),
    'sigma': _Key(_to_float, lambda v: v > 1.0, 'must be > 1 (penalty growth factor)'),
    'lambda_init': _Key(_to_float, lambda v: v >= 0.0, 'must be >= 0'),
    'multiplier_lr': _Key(_to_float, lambda v: v > 0.0, 'must be > 0'),
    'multiplier_hidden_sizes': _Key(
        _to_int_list,
        lambda v: all(h >= 1 for h in v),
        'must be positive layer widths',
    ),
    'multiplier_activation': _Key(
        _to_choice('relu', 'tanh', 'leaky_relu', 'sigmoid', 'softplus', 'identity'),
        lambda v: True,
        '',
    ),
    'multiplier_output': _Key(_to_choice('softplus', 'relu'), lambda v: True, ''),
    'multiplier_max_grad_norm': _Key(_to_float, lambda v: v >= 0.0, 'must be >= 0 (0 turns it off)'),
    'multiplier_init': _Key(_to_float, lambda v: v >= 0.0 or v == -1.0, 'must be >= 0, or -1 for the network\'s own initialisation'),
    'multiplier_max': _Key(_to_float, lambda v: v > 0.0, 'must be > 0 (cap of the multiplier)'),
    'cost_target_pessimism': _Key(
        _to_float,
        lambda v: 0.0 <= v <= 1.0,
        'must be in [0, 1] (0: mean of the twin cost critics, 1: their max)',
    ),
    'f_hat_pessimism': _Key(
        _to_float,
        lambda v: 0.0 <= v <= 1.0,
        'must be in [0, 1] (0: mean of the twin cost critics in F_hat, 1: their max)',
    ),
    'cost_polyak': _Key(_to_float, lambda v: 0.0 <= v <= 1.0, 'must be in [0, 1] (0: algo_cfgs.polyak)'),
    'cost_gamma': _Key(
        _to_float,
        lambda v: 0.0 <= v < 1.0,
        'must be in [0, 1) (discount of the feasibility function F; 0: algo_cfgs.gamma)',
    ),
    'cost_max': _Key(_to_float, lambda v: v >= 0.0, 'must be >= 0 (largest step cost; 0 turns the cap off)'),
    'cost_critic_output': _Key(_to_choice('softplus', 'linear'), lambda v: True, ''),
    'cost_critic_hidden_sizes': _Key(
        _to_int_list_or_empty,
        lambda v: all(h >= 1 for h in v),
        'must be positive layer widths, or [] for model_cfgs.critic.hidden_sizes',
    ),
    'cost_critic_floor': _Key(
        _to_float,
        lambda v: 0.0 <= v < 1.0,
        'must be in [0, 1) (a fraction of d: F_hat never goes below it; 0 turns it off)',
    ),
    'cost_critic_min_slope': _Key(
        _to_float,
        lambda v: 0.0 <= v <= 1.0,
        'must be in [0, 1] (0: the MSE, 1: the matching loss of the softplus head)',
    ),
    'cost_critic_action_noise': _Key(
        _to_float,
        lambda v: 0.0 <= v <= 2.0,
        'must be in [0, 2] (std of the noise on the action in the [-1, 1] box; 0 turns it off)',
    ),
    'dual_feasible_gain': _Key(
        _to_float,
        lambda v: 1.0 <= v <= 1000.0,
        'must be in [1, 1000] (the factor on the feasible side of the dual step\'s residual; 1: the paper)',
    ),
    'f_hat_policy': _Key(_to_choice('stochastic', 'deterministic'), lambda v: True, ''),
    'calibration_window': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (episodes)'),
    'penalty_scale': _Key(_to_choice('normalize', 'reward_rms', 'none'), lambda v: True, ''),
    'reward_critic_layer_norm': _Key(_to_bool, lambda v: True, ''),
    'penalty_scale_rate': _Key(_to_float, lambda v: 0.0 < v <= 1.0, 'must be in (0, 1] (moving-average rate)'),
    'penalty_slope': _Key(_to_choice('capped', 'unbounded'), lambda v: True, ''),
    'dual_rates': _Key(_to_choice('budget', 'fixed'), lambda v: True, ''),
    'dual_rates_reference_steps': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (environment steps)'),
    'dual_rates_m_lambda_min': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (policy steps)'),
    'dual_rates_multiplier_lr_max': _Key(_to_float, lambda v: v > 0.0, 'must be > 0'),
    'infeasible_warning_steps': _Key(
        _to_int,
        lambda v: v >= 0,
        'must be >= 0 (gradient steps with no feasible batch state before a warning; 0: never)',
    ),
}


#: Every key of SAC-FPI's ``fpi_cfgs``.
FPI_KEYS: dict[str, _Key] = {
    'p_f': _Key(_to_float, lambda v: 0.0 < v < 1.0, 'must be in (0, 1) (threshold on the CDF G)'),
    'barrier_t': _Key(_to_float, lambda v: v > 0.0, 'must be > 0 (barrier coefficient)'),
    'calibration_window': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (episodes)'),
}


#: Every key of ALGD's ``algd_cfgs``.
ALGD_KEYS: dict[str, _Key] = {
    'ensemble_size': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (cost critics in the ensemble)'),
    'ensemble_std': _Key(_to_float, lambda v: v >= 0.0, 'must be >= 0 (std weight of the pessimistic cost value)'),
    'cost_lr': _Key(_to_float, lambda v: v > 0.0, 'must be > 0'),
    'rho': _Key(_to_float, lambda v: v > 0.0, 'must be > 0 (penalty factor of the energy)'),
    'lambda_init': _Key(_to_float, lambda v: v > 0.0, 'must be > 0 (the multiplier is exp(log lambda))'),
    'multiplier_lr': _Key(_to_float, lambda v: v > 0.0, 'must be > 0'),
    'cost_target': _Key(_to_float, lambda v: v >= 0.0, 'must be >= 0 (h; 0: from cost_limit)'),
    'cost_limit': _Key(_to_float, lambda v: v >= 0.0, 'must be >= 0 (episode cost limit)'),
    'episode_length': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (steps)'),
    'target_update_freq': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (gradient steps)'),
    'cost_indicator': _Key(_to_bool, lambda v: True, ''),
    'calibration_window': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (episodes)'),
    'dual_actions': _Key(_to_choice('buffer', 'policy'), lambda v: True, ''),
}

#: ``model_cfgs.diffusion``: the diffusion actor's reverse chain.
DIFFUSION_KEYS: dict[str, _Key] = {
    'steps': _Key(_to_int, lambda v: v >= 2, 'must be >= 2 (reverse steps K)'),
    'sigma_min': _Key(_to_float, lambda v: v > 0.0, 'must be > 0'),
    'sigma_max': _Key(_to_float, lambda v: v > 0.0, 'must be > 0'),
    'time_embed_dim': _Key(_to_int, lambda v: v >= 1, 'must be >= 1'),
    'score_coef': _Key(_to_float, lambda v: v >= 0.0, 'must be >= 0 (weight of the score loss)'),
    'score_samples': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (Monte Carlo samples)'),
    'beta': _Key(_to_float, lambda v: v > 0.0, 'must be > 0 (temperature of exp(-energy / beta))'),
}


#: Every key of ``checkpoint_cfgs`` (all plugin algorithms; see :mod:`omnisafe_alam.glue.checkpoint`).
CHECKPOINT_KEYS: dict[str, _Key] = {
    'save_state': _Key(_to_bool, lambda v: True, ''),
    'state_freq': _Key(_to_int, lambda v: v >= 0, 'must be >= 0 (epochs; 0: logger_cfgs.save_model_freq)'),
    'save_buffer': _Key(_to_bool, lambda v: True, ''),
    'keep_last': _Key(_to_int, lambda v: v >= 1, 'must be >= 1 (full checkpoints kept)'),
}


def _validate_group(group: str, cfgs: dict[str, Any], keys: dict[str, _Key]) -> dict[str, Any]:
    unknown = sorted(set(cfgs) - set(keys))
    if unknown:
        raise AlamConfigError(f'unknown key(s) in {group}: {unknown}; known: {sorted(keys)}')
    missing = sorted(set(keys) - set(cfgs))
    if missing:
        raise AlamConfigError(f'{group} is missing key(s): {missing}')
    for key, spec in keys.items():
        value = spec.convert(f'{group}.{key}', cfgs[key])
        if not spec.check(value):
            raise AlamConfigError(f'{group}.{key}={value!r} {spec.requirement}')
        cfgs[key] = value
    return cfgs


def validate_fpi_cfgs(fpi_cfgs: dict[str, Any]) -> dict[str, Any]:
    """Coerce and check every key of SAC-FPI's ``fpi_cfgs`` in place; return it.

    Raises:
        AlamConfigError: naming the first key that is missing, unknown, of the wrong type or out
            of range.
    """
    return _validate_group('fpi_cfgs', fpi_cfgs, FPI_KEYS)


def validate_alam_cfgs(alam_cfgs: dict[str, Any]) -> dict[str, Any]:
    """Coerce and check every key of ``alam_cfgs`` in place; return it.

    Raises:
        AlamConfigError: naming the first key that is missing, unknown, of the wrong type or out
            of range, or the pair ``rho_init`` / ``rho_max`` when ``rho_max < rho_init``.
    """
    _validate_group('alam_cfgs', alam_cfgs, ALAM_KEYS)
    if alam_cfgs['rho_max'] < alam_cfgs['rho_init']:
        raise AlamConfigError(
            f"alam_cfgs.rho_max={alam_cfgs['rho_max']} must be >= "
            f"alam_cfgs.rho_init={alam_cfgs['rho_init']}",
        )
    return alam_cfgs


def _validate_actor(cfgs: Any, group: str) -> None:
    """``model_cfgs.actor_type`` and ``model_cfgs.diffusion``: ALGD needs the diffusion actor, SAC-FPI
    (whose loss reads the log-density) cannot have it, the state-wise family takes either."""
    model = cfgs.model_cfgs
    actor_type = model.get('actor_type')
    allowed = {'algd_cfgs': ('diffusion',), 'fpi_cfgs': ('gaussian_sac',)}.get(group, ('gaussian_sac', 'diffusion'))
    if actor_type not in allowed:
        raise AlamConfigError(f'model_cfgs.actor_type must be one of {allowed} for {cfgs.get("algo")}, got {actor_type!r}')
    if model.get('diffusion') is None:
        raise AlamConfigError(f'{cfgs.get("algo")} needs the key group model_cfgs.diffusion')
    _validate_group('model_cfgs.diffusion', model.diffusion, DIFFUSION_KEYS)
    if model.diffusion['sigma_max'] <= model.diffusion['sigma_min']:
        raise AlamConfigError(
            f"model_cfgs.diffusion.sigma_max={model.diffusion['sigma_max']} must be > "
            f"sigma_min={model.diffusion['sigma_min']}",
        )


def _validate_algd(cfgs: Any) -> None:
    """ALGD's ``algd_cfgs``, and the SAC keys it must not use."""
    _validate_group('algd_cfgs', cfgs.algd_cfgs, ALGD_KEYS)
    algo = cfgs.algo_cfgs
    if _to_bool('algo_cfgs.auto_alpha', algo.auto_alpha) or _to_float('algo_cfgs.alpha', algo.alpha) != 0.0:
        raise AlamConfigError(
            'ALGD has no entropy term: algo_cfgs.auto_alpha must be False and algo_cfgs.alpha 0 '
            f'(got {algo.auto_alpha}, {algo.alpha})',
        )


def coerce_like_defaults(cfgs: dict[str, Any], defaults: dict[str, Any], prefix: str = '') -> None:
    """Convert string values that OmniSafe's CLI left unparsed to the type of their default.

    ``'1e-3'`` becomes a float where the default is a float, ``'false'`` a bool, ``['16', '16']``
    a list of ints, and so on. A value that does not convert raises :class:`AlamConfigError`
    naming the key. Keys without a default (or ``env_cfgs``, free-form) are left alone.
    """
    for key, value in list(cfgs.items()):
        if key not in defaults or key == 'env_cfgs':
            continue
        default, name = defaults[key], f'{prefix}{key}'
        if isinstance(value, dict) and isinstance(default, dict):
            coerce_like_defaults(value, default, f'{name}.')
        elif isinstance(default, bool):
            cfgs[key] = _to_bool(name, value)
        elif isinstance(default, int) and isinstance(value, str):
            cfgs[key] = _to_int(name, value)
        elif isinstance(default, float) and isinstance(value, (str, int)):
            cfgs[key] = _to_float(name, value)
        elif isinstance(default, list) and not default:  # a list that may stay empty
            cfgs[key] = _to_int_list_or_empty(name, value)
        elif isinstance(default, list) and all(isinstance(v, int) for v in default):
            cfgs[key] = _to_int_list(name, value)


def validate_run_cfgs(cfgs: Any, defaults: dict[str, Any] | None = None) -> None:
    """Check a whole run config of a plugin algorithm before anything is built.

    - values left as strings by OmniSafe's CLI are coerced to their default's type;
    - ``algo_cfgs.use_cost`` must be true: the cost critics are what ``F_hat`` is made of;
    - ``algo_cfgs.cost_normalize`` must be false: ``d`` is a tolerance on the discounted value
      of the *raw* cost, and a running normaliser would silently move it;
    - every ``alam_cfgs`` key (the Lagrangian family) or ``fpi_cfgs`` key (SAC-FPI) is coerced
      and range-checked (:func:`validate_alam_cfgs`, :func:`validate_fpi_cfgs`); a run config
      holding the other family's group is refused, naming it, and so is ASAC with a
      ``dual_feasible_gain`` other than 1 (it has no multiplier network);
    - every ``checkpoint_cfgs`` key is coerced and range-checked.
    """
    if defaults is not None:
        coerce_like_defaults(cfgs, defaults)
    if not cfgs.algo_cfgs.use_cost:
        raise AlamConfigError(
            'algo_cfgs.use_cost must be True for state-wise algorithms: F_hat (SAC-FPI: G) comes '
            'from the cost (CDF) critics, which would otherwise never train',
        )
    if cfgs.algo_cfgs.cost_normalize:
        raise AlamConfigError(
            'algo_cfgs.cost_normalize must be False for state-wise algorithms: alam_cfgs.d is a '
            'tolerance on the discounted raw cost, which a cost normaliser would rescale',
        )
    from omnisafe_alam.glue.defaults import SETTINGS_GROUP

    algo = cfgs.get('algo')
    group = SETTINGS_GROUP.get(algo, 'alam_cfgs')
    for other in sorted(set(SETTINGS_GROUP.values()) - {group}):
        if cfgs.get(other) is not None:
            raise AlamConfigError(f'{other} does not apply to {algo}; its settings are in {group}')
    if cfgs.get(group) is None:
        raise AlamConfigError(f'{algo} needs the key group {group}')
    if group == 'fpi_cfgs':
        validate_fpi_cfgs(cfgs.fpi_cfgs)
    elif group == 'algd_cfgs':
        _validate_algd(cfgs)
    else:
        validate_alam_cfgs(cfgs.alam_cfgs)
        if algo == 'ASAC' and cfgs.alam_cfgs['dual_feasible_gain'] != 1.0:
            raise AlamConfigError(
                f"alam_cfgs.dual_feasible_gain={cfgs.alam_cfgs['dual_feasible_gain']} does not apply to ASAC: "
                'it scales the dual step of a state-wise multiplier network, and ASAC has one scalar '
                'multiplier in closed form (leave it at 1)',
            )
    _validate_actor(cfgs, group)
    if cfgs.get('checkpoint_cfgs') is None:
        raise AlamConfigError(f"{cfgs.get('algo')} needs the key group checkpoint_cfgs")
    _validate_group('checkpoint_cfgs', cfgs.checkpoint_cfgs, CHECKPOINT_KEYS)
