"""bench/accuracy_cdnow.py: variants (text templates × stacked training windows) are named and paired unambiguously."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("accuracy_cdnow_under_test", REPO / "bench" / "accuracy_cdnow.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_one_variant_keeps_the_plain_model_name(bench) -> None:
    variants = bench.variant_tags(["v2"], [1])
    assert variants == [("v2", "v2", 1)]
    tags = [tag for tag, _, _ in variants]
    assert bench.model_name("ziln", "v2", tags) == "bert_ziln"
    assert bench.template_pairs(["bert_ziln"], tags) == []


def test_window_counts_are_tagged_and_paired_against_the_first(bench) -> None:
    variants = bench.variant_tags(["v2"], [1, 3])
    assert variants == [("w1", "v2", 1), ("w3", "v2", 3)]
    tags = [tag for tag, _, _ in variants]
    names = [bench.model_name("ziln", tag, tags) for tag in tags]
    names += [bench.model_name("ziln", tag, tags, "_no_anchor") for tag in tags]
    assert names[:2] == ["bert_ziln_w1", "bert_ziln_w3"]
    assert bench.template_pairs(names, tags) == [
        ("bert_ziln_w3", "bert_ziln_w1"),
        ("bert_ziln_no_anchor_w3", "bert_ziln_no_anchor_w1"),
    ]


def test_templates_and_windows_together_name_both(bench) -> None:
    tags = [tag for tag, _, _ in bench.variant_tags(["v1", "v2"], [1, 3])]
    assert tags == ["v1_w1", "v1_w3", "v2_w1", "v2_w3"]
    assert [t for t, _, _ in bench.variant_tags(["v1", "v2"], [3])] == ["v1", "v2"]


@pytest.mark.parametrize("text", ["", "0", "13", "1,1", "one", "1,x"])
def test_bad_window_lists_exit_with_the_rule(bench, text: str) -> None:
    with pytest.raises(SystemExit, match="--train-windows must list distinct counts from 1 to 12"):
        bench.parse_windows(text)


def test_window_lists_parse(bench) -> None:
    assert bench.parse_windows("1,3") == [1, 3]
    assert bench.parse_windows("6") == [6]
