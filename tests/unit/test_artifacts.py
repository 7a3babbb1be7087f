import pytest
import torch

from safelab.errors import SafelabError
from safelab.interp.probes import LinearProbe
from safelab.interp.steering import SteeringConfig, SteeringVector


def test_probe_round_trip_and_planted_direction(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(16, generator=gen)
    x = torch.randn(400, 16, generator=gen)
    y = (x @ direction > 0).long()
    probe = LinearProbe.fit(x, y, "blocks.1.resid_post", data="synthetic")
    cos = torch.nn.functional.cosine_similarity(probe.weight, direction, dim=0)
    assert cos > 0.9
    assert ((probe.score(x) > 0.5).long() == y).float().mean() > 0.95
    path = probe.save(tmp_path / "p")
    assert (tmp_path / "p" / "cfg.json").is_file()
    for where in (tmp_path / "p", path):
        again = LinearProbe.load(where)
        assert again.cfg == probe.cfg
        torch.testing.assert_close(again.score(x), probe.score(x))


def test_artifact_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    vec = SteeringVector(SteeringConfig("blocks.0.resid_post", 4), torch.ones(4))
    vec.save(tmp_path / "v")
    with pytest.raises(SafelabError, match="probe not found"):
        LinearProbe.load(tmp_path / "v")
    with pytest.raises(SafelabError, match="is not a probe"):
        LinearProbe.load(tmp_path / "v" / "vector.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not safetensors")
    with pytest.raises(SafelabError, match="not a valid safetensors file"):
        SteeringVector.load(bad)
    with pytest.raises(SafelabError, match="not found"):
        SteeringVector.load(tmp_path / "nowhere")
