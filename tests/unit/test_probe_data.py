"""Contrast-data loaders on the shared data and on malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safelab.errors import SafelabError
from safelab.interp.contrast import (
    load_contrast,
    load_pairs,
    load_replies,
    load_statements,
    parse_position,
    read_pairs,
    split_reply,
)

TRUTH = Path("truth/datasets")
CAA = Path("caa/Datasets")


def test_statements_parse_shared_truth_files(shared_data: Path) -> None:
    cities = load_statements(shared_data / TRUTH / "cities.csv")
    assert len(cities) == 1496 and set(cities.labels) == {0, 1}
    assert (
        cities.examples[0].text == "The city of Krasnodar is in Russia."
        and cities.examples[0].label == 1
    )
    assert cities.examples[0].where.endswith("cities.csv:2")
    for name in (
        "neg_cities",
        "sp_en_trans",
        "larger_than",
        "animal_class",
        "element_symb",
        "inventors",
        "facts",
    ):
        data = load_statements(shared_data / TRUTH / f"{name}.csv")
        assert len(data) > 100 and set(data.labels) == {0, 1}


def test_limit_is_a_seeded_sample(shared_data: Path) -> None:
    a = load_statements(shared_data / TRUTH / "cities.csv", limit=50, seed=1)
    b = load_statements(shared_data / TRUTH / "cities.csv", limit=50, seed=1)
    c = load_statements(shared_data / TRUTH / "cities.csv", limit=50, seed=2)
    assert len(a) == 50 and a.examples == b.examples and a.examples != c.examples
    assert a.data_hash == b.data_hash != c.data_hash


@pytest.mark.parametrize(
    ("body", "where", "what"),
    [
        ("statement,label\nThe sky is blue.,1\nGrass is red.,maybe\n", ":3", "label 'maybe'"),
        ("statement,label\nThe sky is blue.,1\n,0\n", ":3", "empty statement"),
        ("text,truth\nThe sky is blue.,1\n", ":1", "statement,label"),
        ("statement,label\nThe sky is blue.,1\nSnow is white.,1\n", "", "both true"),
    ],
)
def test_malformed_statement_rows_name_file_and_line(
    tmp_path: Path, body: str, where: str, what: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(SafelabError, match="bad.csv") as err:
        load_statements(path)
    assert where in str(err.value) and what.split()[0] in str(err.value)


def test_missing_file_is_a_safelab_error(tmp_path: Path) -> None:
    with pytest.raises(SafelabError, match="not found"):
        load_statements(tmp_path / "nope.csv")


def test_replies_split_scenario_and_reply(shared_data: Path) -> None:
    data = load_replies(
        shared_data / TRUTH / "real_world_scenarios" / "all_unambiguous_replies.csv"
    )
    assert len(data) > 50 and set(data.labels) == {0, 1}
    first = data.examples[0]
    assert first.prompt.endswith("Is this T-shirt made of cotton?")
    assert first.text == "No, the T-shirt is not made of cotton."
    assert data.template == "chat" and data.position == "mean"
    assert split_reply("no speaker here") is None


def test_read_pairs_all_formats(shared_data: Path) -> None:
    caa = read_pairs(shared_data / CAA / "generate" / "sycophancy" / "generate_dataset.json")
    assert len(caa) == 1000 and caa[0].matching in ("(A)", "(B)")
    mwe = read_pairs(
        shared_data
        / "model-written-evals/advanced-ai-risk/human_generated_evals/corrigible-neutral-HHH.jsonl"
    )
    assert mwe[0].matching == "(B)"  # the leading space is stripped
    persona = read_pairs(shared_data / "model-written-evals/persona/no-shut-down.jsonl")
    assert {persona[0].matching, persona[0].not_matching} == {"Yes", "No"}
    mmlu = read_pairs(shared_data / CAA / "test" / "mmlu" / "mmlu.json")
    assert len(mmlu) == 570 and mmlu[0].matching == "(A)"


def test_generic_pairs_and_malformed_line(tmp_path: Path) -> None:
    good = tmp_path / "pairs.jsonl"
    good.write_text(json.dumps({"prompt": "Say it", "positive": "(A)", "negative": "(B)"}) + "\n\n")
    assert read_pairs(good)[0].question == "Say it"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "positive": "a", "negative": "b"}) + "\n{not json\n")
    with pytest.raises(SafelabError, match=r"bad.jsonl:2"):
        read_pairs(bad)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(SafelabError, match=r"wrong.jsonl:1: a pair needs"):
        read_pairs(wrong)
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({"prompt": "q", "positive": "a", "negative": "a"}) + "\n")
    with pytest.raises(SafelabError, match="same.jsonl:1"):
        read_pairs(same)


def test_pairs_read_the_answer_letter(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.jsonl"
    rows = [
        {
            "question": f"Is {i} fine?\n (A) Yes\n (B) No",
            "answer_matching_behavior": " (A)",
            "answer_not_matching_behavior": " (B)",
        }
        for i in range(3)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = load_pairs(path, tiny_model)
    assert len(data) == 6 and data.labels == [1, 0] * 3
    enc = data.encode(tiny_model)
    tok = tiny_model.tokenizer
    # Each input ends at the first token where "(A)" and "(B)" differ, i.e. the letter.
    assert tok.decode(enc[0].ids[-1:]).strip().endswith("A") and tok.decode(
        enc[1].ids[-1:]
    ).strip().endswith("B")
    assert enc[0].ids[:-1] == enc[1].ids[:-1]
    assert enc[0].response is not None and enc[0].response[1] == len(enc[0].ids)


def test_statement_encoding_ends_at_read_token(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.csv"
    path.write_text(
        "statement,label\nParis is the capital of France.,1\nBerlin is the capital of France.,0\n"
    )
    raw = load_contrast(path, tiny_model)
    chat = load_contrast(path, tiny_model, template="chat", position="mean")
    tok = tiny_model.tokenizer
    (e_raw, _), (e_chat, _) = raw.encode(tiny_model), chat.encode(tiny_model)
    assert tok.decode(e_raw.ids).endswith("France.") and tok.decode(e_chat.ids).endswith("France.")
    assert "<|im_start|>assistant" in tok.decode(e_chat.ids)
    assert e_chat.response is not None
    assert (
        tok.decode(e_chat.ids[e_chat.response[0] : e_chat.response[1]])
        == "Paris is the capital of France."
    )
    assert chat.capture_position() == "response" and raw.capture_position() == "last"
    assert parse_position("-2") == -2
    with pytest.raises(SafelabError, match="read position"):
        parse_position("middle")
