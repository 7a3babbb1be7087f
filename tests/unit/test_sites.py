import pytest

from safelab.errors import SafelabError
from safelab.models.sites import Site, all_sites, resolve_sites


def test_site_names_round_trip() -> None:
    for site in all_sites(4):
        assert Site.parse(str(site), 4) == site
    assert str(Site(12, "resid_post")) == "blocks.12.resid_post"


def test_glob_expands_in_forward_order() -> None:
    sites = resolve_sites("blocks.*.resid_post", 3)
    assert [str(s) for s in sites] == [f"blocks.{i}.resid_post" for i in range(3)]
    mixed = resolve_sites(["blocks.1.mlp_out", "blocks.1.resid_pre", "ln_final"], 3)
    assert [str(s) for s in mixed] == ["blocks.1.resid_pre", "blocks.1.mlp_out", "ln_final"]
    assert len(resolve_sites("blocks.1?.resid_pre", 30)) == 10
    assert resolve_sites("blocks.0.resid_pre,blocks.0.resid_pre", 2) == [Site(0, "resid_pre")]


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("blocks.999.resid_post", "blocks 0..29"),
        ("blocks.3.resid", "unknown site"),
        ("layer3", "unknown site"),
        ("blocks.*.nope", "matches no site"),
        ("", "no sites given"),
    ],
)
def test_bad_sites_name_the_input_and_the_fix(pattern: str, fragment: str) -> None:
    with pytest.raises(SafelabError, match=fragment):
        resolve_sites(pattern, 30)
