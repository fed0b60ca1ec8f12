"""Feature normalisation, input checks, pre-tokenisation and dynamic padding."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spendpred.errors import DataError, ModelError
from spendpred.model.data import length_sorted_batches, shuffled_batches, tokenize_texts
from spendpred.model.features import FeatureNormaliser, check_labels, check_texts, signed_log1p
from spendpred.model.network import load_tokenizer
from tests.tiny_bert import make_tiny_bert


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return load_tokenizer(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


def test_normaliser_log1p_then_zscore() -> None:
    e1 = math.e - 1.0
    train = pd.DataFrame({"a": [0.0, e1 * (math.e + 1.0)], "b": [5.0, 5.0]})  # log1p -> 0 and 2
    normaliser = FeatureNormaliser.fit(train, ["a", "b"])
    assert normaliser.mean == pytest.approx((1.0, math.log1p(5.0)))
    assert normaliser.std == pytest.approx((1.0, 1.0))  # constant column gets std 1
    out = normaliser.transform(pd.DataFrame({"a": [e1], "b": [5.0]}))
    assert out.dtype == np.float32
    assert out[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_signed_log1p_keeps_negative_sentinels_finite() -> None:
    assert signed_log1p(np.array([-1.0, 0.0, math.e - 1.0])).tolist() == pytest.approx([-math.log(2.0), 0.0, 1.0])


def test_normaliser_round_trips_through_json_form() -> None:
    normaliser = FeatureNormaliser.fit(pd.DataFrame({"a": [1.0, 2.0, 9.0]}), ["a"])
    restored = FeatureNormaliser.from_dict(["a"], normaliser.to_dict())
    assert restored == normaliser


def test_normaliser_from_inconsistent_json_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="2 means.*1 feature columns"):
        FeatureNormaliser.from_dict(["a"], {"mean": [0.0, 1.0], "std": [1.0, 1.0]})
    with pytest.raises(ModelError, match="non-positive std"):
        FeatureNormaliser.from_dict(["a"], {"mean": [0.0], "std": [0.0]})
    with pytest.raises(ModelError, match="malformed"):
        FeatureNormaliser.from_dict(["a"], {"mean": [0.0]})


def test_null_feature_is_a_data_error_naming_column_and_user() -> None:
    df = pd.DataFrame({"user_id": ["u1", "u2"], "a": [1.0, np.nan]})
    with pytest.raises(DataError, match=r"user_id='u2'.*feature 'a'"):
        FeatureNormaliser.fit(df, ["a"])
    with pytest.raises(DataError, match=r"lacks feature columns \['b'\]"):
        FeatureNormaliser.fit(df, ["b"])


def test_label_and_text_checks() -> None:
    good = pd.DataFrame({"user_id": ["u1"], "text": ["premium"], "label": [3.0]})
    assert check_labels(good, "train data").tolist() == [3.0]
    assert check_texts(good, "train data") == ["premium"]
    with pytest.raises(DataError, match=r"train data row 0 \(user_id='u1'\).*'label'=-1.0"):
        check_labels(good.assign(label=[-1.0]), "train data")
    with pytest.raises(DataError, match="no 'label' column"):
        check_labels(good.drop(columns="label"), "train data")
    with pytest.raises(DataError, match="'text' must be a string"):
        check_texts(good.assign(text=[None]), "train data")


def test_tokenize_and_pad_per_batch(tokenizer) -> None:  # noqa: ANN001
    texts = ["premium", "budget cheap discount items", "user"]
    tokens = tokenize_texts(tokenizer, texts, max_length=16)
    assert tokens.lengths.tolist() == [3, 6, 3]  # [CLS] ... [SEP]
    input_ids, mask = tokens.batch([0, 2])
    assert input_ids.shape == (2, 3)  # padded only to this batch's longest text
    input_ids, mask = tokens.batch([1, 0])
    assert input_ids.shape == (2, 6)
    assert mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert input_ids[1, 3:].tolist() == [tokenizer.pad_token_id] * 3
    assert input_ids[1, :3].tolist() == tokenizer("premium")["input_ids"]


def test_tokenize_truncates_to_max_length(tokenizer) -> None:  # noqa: ANN001
    tokens = tokenize_texts(tokenizer, ["user " * 50], max_length=10)
    assert tokens.lengths.tolist() == [10]
    assert tokens.batch([0])[0][0, -1].item() == tokenizer.sep_token_id


def test_length_sorted_batches_cover_every_row_once() -> None:
    batches = length_sorted_batches(np.array([3, 9, 1, 9, 5]), batch_size=2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]


def test_shuffled_batches_depend_only_on_the_seed() -> None:
    first = shuffled_batches(10, 3, np.random.default_rng(7))
    second = shuffled_batches(10, 3, np.random.default_rng(7))
    other = shuffled_batches(10, 3, np.random.default_rng(8))
    assert [b.tolist() for b in first] == [b.tolist() for b in second]
    assert [b.tolist() for b in first] != [b.tolist() for b in other]
    assert sorted(np.concatenate(first).tolist()) == list(range(10))
    assert [len(b) for b in first] == [3, 3, 3, 1]
