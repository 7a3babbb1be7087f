import pytest
import torch

from safelab.errors import SafelabError

TEXTS = [
    "Paris is the capital of France.",
    "Two plus two is four.",
    "Safety researchers probe models for deception and power seeking over many tokens.",
]


def test_batched_capture_equals_one_at_a_time(tiny_model) -> None:  # type: ignore[no-untyped-def]
    batched = tiny_model.capture(TEXTS, "blocks.*.resid_post", position="all", batch_size=3)
    for i, text in enumerate(TEXTS):
        single = tiny_model.capture([text], "blocks.*.resid_post", position="all", batch_size=1)
        for site in batched.sites:
            torch.testing.assert_close(
                batched.per_sample(site)[i], single[site], atol=1e-5, rtol=1e-5
            )


def test_positions(tiny_model) -> None:  # type: ignore[no-untyped-def]
    site = "blocks.1.resid_post"
    full = tiny_model.capture(TEXTS, site, position="all")
    lengths = [len(tiny_model.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert len(full) == sum(lengths)
    assert full.sample.tolist() == [i for i, n in enumerate(lengths) for _ in range(n)]
    per = full.per_sample(site)
    last = tiny_model.capture(TEXTS, site, position="last")
    second = tiny_model.capture(TEXTS, site, position=1)
    from_end = tiny_model.capture(TEXTS, site, position=-2)
    for i in range(len(TEXTS)):
        torch.testing.assert_close(last[site][i], per[i][-1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(second[site][i], per[i][1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(from_end[site][i], per[i][-2], atol=1e-5, rtol=1e-5)
    assert last.position.tolist() == [n - 1 for n in lengths]


def test_response_span_covers_exactly_the_assistant_message(tiny_model) -> None:  # type: ignore[no-untyped-def]
    chat = [
        {"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": "Two plus two is four."},
    ]
    acts = tiny_model.capture([chat], "blocks.0.resid_post", position="response")
    text = tiny_model.tokenizer.decode(acts.token.tolist())
    assert text == "Two plus two is four."
    with pytest.raises(SafelabError, match="no response span"):
        tiny_model.capture([chat[:1]], "blocks.0.resid_post", position="response")


@pytest.mark.parametrize(
    ("inputs", "kwargs", "fragment"),
    [
        ([], {}, "empty input list"),
        (["hi"], {"sites": "blocks.999.resid_post"}, "blocks 0..2"),
        (["hi"], {"position": 50}, "outside input 0"),
        (["hi"], {"position": "middle"}, "unknown position"),
        ([[{"content": "no role"}]], {}, "not a text or a chat"),
    ],
)
def test_bad_capture_input_is_a_clear_error(tiny_model, inputs, kwargs, fragment) -> None:  # type: ignore[no-untyped-def]
    args = {"sites": "blocks.0.resid_post", "position": "last", **kwargs}
    with pytest.raises(SafelabError, match=fragment):
        tiny_model.capture(inputs, args["sites"], position=args["position"])


def test_ablate_and_patch(tiny_model) -> None:  # type: ignore[no-untyped-def]
    site = "blocks.1.resid_post"
    direction = torch.randn(tiny_model.d_model)
    with tiny_model.ablate(direction, site):
        acts = tiny_model.capture(TEXTS, site, position="all")[site]
    assert (acts @ (direction / direction.norm())).abs().max() < 1e-4
    donor = torch.randn(tiny_model.d_model)
    with tiny_model.patch(site, donor):
        patched = tiny_model.capture(TEXTS[:1], site, position="all")[site]
    torch.testing.assert_close(patched, donor.expand_as(patched))
    with pytest.raises(SafelabError, match="d_model"):
        tiny_model.ablate(torch.ones(7), site).__enter__()
