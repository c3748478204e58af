"""The speed benchmark measures what it says (numbers only on a tiny config: CI is no timing rig)."""

from __future__ import annotations

import pytest

from omnisafe_alam.tools.bench import bench, format_table


def test_bench_rows_ratios_and_flop_counts() -> None:
    rows = bench(['SACLag', 'SACALaM'], [16], ['cpu'], threads=1, steps=4, rounds=2)
    saclag, sacalam = rows
    assert (saclag.algo, sacalam.algo) == ('SACLag', 'SACALaM')
    assert saclag.ratio_grad == 1.0 and saclag.ratio_env == 1.0 and saclag.ratio_run == 1.0
    # the 3000-step projection: 500 random steps and 2500 policy steps with updates
    assert sacalam.run_3000_s > 2500 / sacalam.env_steps_per_s
    assert sacalam.ratio_run == pytest.approx(sacalam.run_3000_s / saclag.run_3000_s)
    # SACALaM does strictly more arithmetic per step: twin cost critics on K=5 policy samples,
    # a second critic pair, the multiplier network (counted by torch's flop counter). On the
    # benchmark's task both now take OmniSafe's backbone (an actor step every 2nd critic step),
    # which halves the K-sample actor work per step: 1.71x measured at width 16 (2.6x at delay 1)
    assert sacalam.gflop_per_step > 1.5 * saclag.gflop_per_step > 0
    table = format_table(rows)
    assert '| SACALaM | 16 | cpu |' in table and 'matmul GFLOP/s' in table



def test_subjects_with_overrides_parse_or_name_the_mistake() -> None:
    from omnisafe_alam.tools.bench import parse_subject

    assert parse_subject('SACLag') == ('SACLag', {})
    assert parse_subject('SACALaM@algo_cfgs.policy_delay=2,alam_cfgs.K=3') == (
        'SACALaM',
        {'algo_cfgs': {'policy_delay': 2}, 'alam_cfgs': {'K': 3}},
    )
    with pytest.raises(ValueError, match='must look like group.key=value'):
        parse_subject('SACALaM@policy_delay=2')
