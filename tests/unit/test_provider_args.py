"""The provider's -M args: one dataclass gives the parsing, the error and the docs table."""

import pytest

from safelab.errors import SafelabError
from safelab.provider import api
from safelab.provider.args import ProviderArgs


def test_model_args_parse_from_inspect_strings() -> None:
    args = ProviderArgs.parse(
        {"capture": "blocks.0.resid_post, blocks.1.mlp_out", "steer_scale": "-2.5"}
        | {"capture_vectors": "false", "batch_size": "4", "probe": ["a", " b "]}
    )
    assert args.capture == ("blocks.0.resid_post", "blocks.1.mlp_out")
    assert args.steer_scale == -2.5 and args.batch_size == 4 and args.capture_vectors is False
    assert args.probe == ("a", "b") and args.steer is None and args.dtype == "auto"
    assert ProviderArgs.parse({}) == ProviderArgs()


def test_unknown_and_malformed_args_name_the_known_ones() -> None:
    with pytest.raises(SafelabError, match=r"unknown model args.*steering.*known: steer, "):
        ProviderArgs.parse({"steering": "x"})
    with pytest.raises(SafelabError, match="-M batch_size='many'"):
        ProviderArgs.parse({"batch_size": "many"})


def test_every_arg_is_in_the_providers_docstring() -> None:
    assert api.__doc__ is not None
    for name in ProviderArgs.names():
        assert f"``{name}``" in api.__doc__
