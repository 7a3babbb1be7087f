"""The base-model control: a detector the base meets too is flagged; one only the organism
meets is not; the layer is picked by the gain, not by the raw AUROC."""

import numpy as np
import pytest

from safelab.errors import SafelabError
from safelab.interp.base_control import RULE, BaseControl, base_control


def _data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return np.array([1] * n + [0] * n), rng


def test_base_separating_as_well_as_the_organism_raises_the_flag() -> None:
    y, rng = _data()
    # Both models read the input (say, the trigger's text) equally well.
    org = y * 2.0 + rng.normal(size=y.size)
    base = y * 2.0 + rng.normal(size=y.size)
    ctl = base_control({"blocks.0.resid_post": org}, {"blocks.0.resid_post": base}, y, seed=3)
    assert ctl.selected.organism_auroc > 0.8 and ctl.selected.base_auroc > 0.8
    assert ctl.selected.gain_ci[0] <= 0 <= ctl.selected.gain_ci[1]
    assert ctl.reads_input_not_behaviour and not ctl.caught
    assert ctl.rule == RULE


def test_only_the_organism_separating_is_caught_and_not_flagged() -> None:
    y, rng = _data()
    org = y * 2.0 + rng.normal(size=y.size)
    base = rng.normal(size=y.size)
    ctl = base_control(org, base, y, seed=3)
    assert ctl.caught and not ctl.reads_input_not_behaviour
    assert ctl.selected.gain_ci[0] > 0
    assert ctl.selected.base_auroc_ci[0] <= 0.5 <= ctl.selected.base_auroc_ci[1]


def test_a_base_that_separates_with_the_opposite_sign_is_still_reading_the_input() -> None:
    y, rng = _data()
    org = y * 3.0 + rng.normal(size=y.size)
    base = -y * 3.0 + rng.normal(size=y.size)  # base AUROC near 0: the input, sign reversed
    ctl = base_control(org, base, y, seed=3)
    assert ctl.selected.base_auroc < 0.1 and ctl.selected.gain > 0.8
    assert ctl.reads_input_not_behaviour and not ctl.caught


def test_neither_separating_is_neither_flagged_nor_caught() -> None:
    y, rng = _data()
    ctl = base_control(rng.normal(size=y.size), rng.normal(size=y.size), y)
    assert not ctl.caught and not ctl.reads_input_not_behaviour


def test_layer_is_selected_by_gain_not_raw_auroc_and_reported_on_held_out() -> None:
    y, rng = _data(n=48)
    # blocks.1: perfect on both (the input); blocks.5: weaker on the organism, nothing on base.
    org = {
        "blocks.1.resid_post": y * 10.0 + rng.normal(size=y.size),
        "blocks.5.resid_post": y * 1.5 + rng.normal(size=y.size),
    }
    base = {
        "blocks.1.resid_post": y * 10.0 + rng.normal(size=y.size),
        "blocks.5.resid_post": rng.normal(size=y.size),
    }
    ctl = base_control(org, base, y, seed=0)
    assert (
        ctl.sites["blocks.1.resid_post"].organism_auroc
        > ctl.sites["blocks.5.resid_post"].organism_auroc
    )
    assert ctl.sites["blocks.1.resid_post"].reads_input_not_behaviour
    assert ctl.selected_site == "blocks.5.resid_post"
    assert ctl.n_calibration == 48 and ctl.selected.n == 48  # the other half
    assert ctl.caught
    again = BaseControl.from_dict(ctl.to_dict())
    assert again.to_dict() == ctl.to_dict()


def test_same_seed_same_intervals_and_bad_inputs() -> None:
    y, rng = _data(n=10)
    org, base = rng.normal(size=y.size), rng.normal(size=y.size)
    a = base_control(org, base, y, seed=7).to_dict()
    assert a == base_control(org, base, y, seed=7).to_dict()
    with pytest.raises(SafelabError, match="sites"):
        base_control({"a": org}, {"b": base}, y)
    with pytest.raises(SafelabError, match="positive"):
        base_control(org, base, np.ones_like(y))
