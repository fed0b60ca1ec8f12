"""Attributions through the real model (completeness, determinism), reason codes and who gets them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spendpred import explain
from spendpred.errors import ConfigError
from spendpred.model import SpendModel, TrainConfig, train_regressor
from spendpred.textify import segments
from tests.tiny_bert import FEATURE_COLUMNS, make_synthetic_users, make_tiny_bert

pytestmark = pytest.mark.usefixtures("torch_one_thread")

V2_TEXT = ('4 completed orders, 94.75 spent. orders: 45.00 electronics; 3 days earlier 12.50 books (cancelled). '
           'searches: "laptop"; 2 days earlier "laptop"; same day "phone case". reviews: 5/5 "great fast delivery".')  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SpendModel:
    users = make_synthetic_users(160, seed=3)
    bert = make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-3, loss="ziln", max_length=128, device="cpu", progress=False)
    return train_regressor(users.iloc[:120], users.iloc[120:], FEATURE_COLUMNS, config, bert, "v2").bundle


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    users = make_synthetic_users(12, seed=5)
    users.loc[0, "text"] = V2_TEXT
    users.loc[1, "text"] = "no completed orders."
    return users


def test_attributions_add_up_to_the_prediction_minus_the_baseline(model: SpendModel, frame: pd.DataFrame) -> None:
    attributions = explain.attribute(model, frame, factor=1.25)
    published = model.predict(frame) * 1.25
    assert [a.user_id for a in attributions] == frame["user_id"].tolist()
    for a, score in zip(attributions, published, strict=True):
        assert abs(a.delta) <= explain.tolerance(a.prediction, a.baseline)
        assert a.prediction == pytest.approx(score, rel=1e-4)  # the attributed function is the published score
        assert len(a.features) == len(model.normaliser.columns)


def test_a_user_equal_to_the_baseline_gets_nothing(model: SpendModel, frame: pd.DataFrame) -> None:
    row = frame.iloc[[1]].copy()
    stats = dict(zip(model.normaliser.columns, model.normaliser.mean, strict=True))
    for column in FEATURE_COLUMNS:  # raw values whose normalised value is 0 (hybrid columns aside)
        row[column] = float(np.expm1(stats[column]))
    (a,) = explain.attribute(model, row)
    assert all(abs(a.features[c]) < 1e-6 for c in FEATURE_COLUMNS)


def test_reasons_are_deterministic_and_readable(model: SpendModel, frame: pd.DataFrame) -> None:
    first = explain.reasons_table(explain.attribute(model, frame))
    second = explain.reasons_table(explain.attribute(model, frame.iloc[::-1]))
    pd.testing.assert_frame_equal(first, second.sort_values(["user_id", "rank"]).reset_index(drop=True))
    assert (first.groupby("user_id")["rank"].apply(list) == pd.Series([[1, 2, 3]] * len(frame), index=sorted(frame["user_id"]))).all()
    assert first["reason"].str.match(r"^.+ \([+-][\d,.]+\)$").all()
    for a in explain.attribute(model, frame):  # the reasons are the items that move the prediction its way, largest first
        shown = first[first["user_id"] == a.user_id]["contribution"].tolist()
        way = 1 if a.prediction >= a.baseline else -1
        toward = sorted((round(i.contribution, 2) for i in explain.all_items(a) if way * i.contribution > 0), key=lambda v: -way * v)
        assert shown[: len(toward)] == toward[:3]


def _hand_made(prediction: float, features: dict[str, float], text: float) -> explain.UserAttribution:
    return explain.UserAttribution("u", "", prediction, 100.0, features, [], raw_values={"frequency_30d": 3, "recency_days": 200},
                                   text_lump=text)  # fmt: skip


def test_reasons_point_the_way_the_prediction_moved_from_the_baseline() -> None:
    features = {"frequency_30d": 120.0, "recency_days": -60.0, "monetary_90d": 10.0, "tenure_days": -5.0}
    high = explain.reasons(_hand_made(210.0, features, 45.0))  # 100 + 120 - 60 + 10 - 5 + 45
    assert [r["reason"] for r in high][:2] == ["3 orders in the last 30 days (+120)", f"{explain.TEXT_PHRASE} (+45)"]
    assert [r["feature"] for r in high] == ["frequency_30d", explain.TEXT_KEY, "monetary_90d"]  # -60 is larger, but pulls down
    assert [r["rank"] for r in high] == [1, 2, 3]
    low = explain.reasons(_hand_made(20.0, {**features, "frequency_30d": -20.0}, -45.0))
    assert [r["feature"] for r in low] == ["recency_days", explain.TEXT_KEY, "frequency_30d"]
    assert [r["contribution"] for r in low] == [-60.0, -45.0, -20.0]
    # fewer than three push its way: the largest of the others follow
    one_way = explain.reasons(_hand_made(150.0, {"frequency_30d": 120.0, "recency_days": -60.0, "tenure_days": -4.0}, -6.0))
    assert [r["feature"] for r in one_way] == ["frequency_30d", "recency_days", explain.TEXT_KEY]


def test_text_is_split_by_segment_and_keeps_its_total(model: SpendModel, frame: pd.DataFrame) -> None:
    (a,) = explain.attribute(model, frame.iloc[[0]])
    items = explain.text_items(a)
    keys = {i.key for i in items}
    assert {"text:orders", "text:category:electronics", "text:category:books", "text:search:laptop",
            "text:search:phone case", "text:reviews", "text:totals"} <= keys  # fmt: skip
    assert sum(i.contribution for i in items) == pytest.approx(a.text_total, abs=1e-9)
    phrases = {i.key: i.phrase for i in items}
    assert phrases["text:search:laptop"] == "searched 'laptop' twice"
    assert "great" not in " ".join(phrases.values())  # a review shows its rating, never its body


def test_segments_of_both_templates() -> None:
    kinds = [(s.kind, s.index, s.value) for s in segments(V2_TEXT)]
    assert ("category", 1, "books") in kinds and ("search", 2, "phone case") in kinds and ("review", 0, "5") in kinds
    v1 = "member for 40 days. no completed orders. last 30 days: 2 views. searches: 1 day ago \"red shoes\"."
    assert [s.kind for s in segments(v1)] == ["tenure", "totals", "events", "search", "search"]
    assert segments("") == []


def test_feature_phrases_and_signs() -> None:
    assert explain.feature_phrase("frequency_30d", 3) == "3 orders in the last 30 days"
    assert explain.feature_phrase("recency_days", 200) == "no order for 200 days"
    assert explain.format_reason(explain.Item("recency_days", "no order for 200 days", -60.4)) == "no order for 200 days (-60)"
    assert explain.format_reason(explain.Item("x", "y", 4.256)) == "y (+4.26)"
    assert "[email]" in explain._short_query("mail john@example.com")


def test_scope_default_all_and_bad() -> None:
    tonight = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "tier": ["high", "medium", "low", "low"]})
    before = pd.DataFrame({"user_id": ["a", "b", "c"], "tier": ["high", "medium", "medium"]})
    assert list(explain.select_users(tonight, before)) == ["a", "c"]
    assert list(explain.select_users(tonight, None)) == ["a"]
    assert list(explain.select_users(tonight, before, "all")) == ["a", "b", "c", "d"]
    with pytest.raises(ConfigError, match="SPENDPRED_REASONS_SCOPE"):
        explain.select_users(tonight, before, "everyone")


# --------------------------------------------------------------------------- the nightly's head-only path


def _total(a: explain.UserAttribution) -> float:
    return sum(a.features.values()) + a.text_total


def test_head_path_adds_up_to_the_published_score_minus_the_full_paths_baseline(model: SpendModel, frame: pd.DataFrame) -> None:
    head = explain.attribute_head(model, frame, factor=1.25)
    full = explain.attribute(model, frame, factor=1.25)
    published = model.predict(frame) * 1.25  # the pooled embeddings come from encode, as scoring's (and the cache's) do
    assert [a.user_id for a in head] == frame["user_id"].tolist()
    for h, f, score in zip(head, full, published, strict=True):
        assert h.method == "head" and f.method == "full"
        assert abs(h.delta) <= explain.tolerance(h.prediction, h.baseline)
        assert h.prediction == pytest.approx(score, rel=1e-5)
        assert h.baseline == pytest.approx(f.baseline, rel=1e-6)  # the same baseline: features 0, the [PAD] text
        assert list(h.features) == list(f.features)


def test_head_path_totals_equal_the_full_paths_with_the_same_pooled_embedding(model: SpendModel, frame: pd.DataFrame) -> None:
    # with the full path's float32 pooled embedding both attribute the same F(user) - F(baseline): the totals agree within
    # the tolerance. How it divides between the text and each feature depends on the path (straight in pooled space here,
    # in word-embedding space there): each feature's share is close (measured <= 0.4% of the user's total absolute
    # attribution with this model), the text's total takes the rest of the difference (measured up to 1.5%, a small one
    # may even change sign), so neither is asserted equal
    pooled = model.encode(frame["text"].tolist(), precision="fp32")
    head = explain.attribute_head(model, frame, pooled=pooled)
    full = explain.attribute(model, frame)
    for h, f in zip(head, full, strict=True):
        assert h.prediction == pytest.approx(f.prediction, rel=1e-5)
        assert abs(_total(h) - _total(f)) <= explain.tolerance(f.prediction, f.baseline)
        size = sum(abs(v) for v in f.features.values()) + abs(f.text_total)
        assert max(abs(h.features[c] - f.features[c]) for c in f.features) <= 0.01 * size
        assert abs(h.text_total - f.text_total) <= 0.03 * size


def test_head_path_features_equal_the_full_paths_when_the_text_is_the_baseline(model: SpendModel, frame: pd.DataFrame) -> None:
    rows = frame.iloc[[2, 3]].copy()
    rows["text"] = ""  # [CLS] [SEP] only: the text does not move along either path, so each feature's share is the same quantity
    head = explain.attribute_head(model, rows, pooled=model.encode(rows["text"].tolist(), precision="fp32"))
    full = explain.attribute(model, rows)
    for h, f in zip(head, full, strict=True):
        assert abs(h.text_total) < 1e-6 and abs(f.text_total) < 1e-6
        for column, value in f.features.items():
            assert h.features[column] == pytest.approx(value, abs=1e-4, rel=1e-4)


def test_head_path_splits_the_text_by_segment_approximately_or_keeps_it_whole(model: SpendModel, frame: pd.DataFrame) -> None:
    (split,) = explain.attribute_head(model, frame.iloc[[0]], split_text=True)
    (whole,) = explain.attribute_head(model, frame.iloc[[0]])  # the nightly's default: one item
    assert split.text_lump is None and split.text_total == pytest.approx(whole.text_total, abs=1e-12)
    items = explain.text_items(split)
    assert {"text:orders", "text:search:laptop", "text:reviews"} <= {i.key for i in items}
    assert sum(i.contribution for i in items) == pytest.approx(split.text_total, abs=1e-9)
    assert explain.text_items(whole) == [explain.Item(explain.TEXT_KEY, explain.TEXT_PHRASE, whole.text_total)]
    assert explain.REASON_TEMPLATE_VERSION == "v3"  # v2 added TEXT_PHRASE
    # no proportional split where the one-step parts add up to the other sign (or zero): one item
    assert explain._scaled([(0, 1, 1.0), (1, 2, -3.0)], 4.0) is None and explain._scaled([], 1.0) is None
    scaled = explain._scaled([(0, 1, 1.0), (1, 2, 3.0)], 2.0)
    assert scaled is not None and sum(c for _, _, c in scaled) == 2.0 and scaled[0][2] == pytest.approx(0.5)


@pytest.mark.parametrize("split_text", [False, True])
def test_head_path_reasons_are_deterministic(model: SpendModel, frame: pd.DataFrame, split_text: bool) -> None:
    first = explain.reasons_table(explain.attribute_head(model, frame, split_text=split_text))
    second = explain.reasons_table(explain.attribute_head(model, frame.iloc[::-1], split_text=split_text))
    pd.testing.assert_frame_equal(first, second.sort_values(["user_id", "rank"]).reset_index(drop=True))
    assert len(first) == 3 * len(frame)
    # the table chooses for every user at once, one user's reasons alone: the same rows
    attributions = explain.attribute_head(model, frame, split_text=split_text) + explain.attribute(model, frame.head(2))
    table = explain.reasons_table(attributions)
    one_by_one = [{"user_id": a.user_id, **r} for a in attributions for r in explain.reasons(a)]
    assert table.to_dict("records") == one_by_one


def test_a_baseline_store_gives_the_same_attributions_without_encoding_again(model: SpendModel, frame: pd.DataFrame) -> None:
    store: dict[bytes, np.ndarray] = {}
    first = explain.attribute_head(model, frame, baselines=store)
    assert store  # every distinct baseline encoded once and kept
    blob = explain.pack_baselines(store, "1|cpu")
    assert explain.unpack_baselines(blob, "2|cpu", model.hidden_size) == {}  # another model's store is not used
    assert explain.unpack_baselines(b"not json", "1|cpu", model.hidden_size) == {}
    loaded = explain.unpack_baselines(blob, "1|cpu", model.hidden_size)
    assert loaded.keys() == store.keys()
    encoded: list[int] = []
    pooled = model.encode(frame["text"].tolist())
    original = model.regressor.encoder.forward

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        encoded.append(1)
        return original(*args, **kwargs)

    model.regressor.encoder.forward = counting
    try:
        second = explain.attribute_head(model, frame, pooled=pooled, baselines=loaded)
    finally:
        del model.regressor.encoder.forward
    assert encoded == []  # every baseline came from the store: the encoder never ran
    pd.testing.assert_frame_equal(explain.reasons_table(first), explain.reasons_table(second))
    assert [a.baseline for a in first] == [a.baseline for a in second]


def test_input_fingerprints_change_with_any_input_or_the_context(frame: pd.DataFrame) -> None:
    prints = explain.input_fingerprints(frame, "model=1")
    assert len(set(prints)) == len(frame) and all(len(p) == explain.FINGERPRINT_BYTES for p in prints)
    assert explain.input_fingerprints(frame.iloc[::-1], "model=1") == prints[::-1]  # per row, whatever the order
    assert explain.input_fingerprints(frame, "model=2") != prints
    changed = frame.copy()
    changed.loc[3, FEATURE_COLUMNS[0]] = changed.loc[3, FEATURE_COLUMNS[0]] + 1
    changed.loc[4, "text"] = changed.loc[4, "text"] + " "
    again = explain.input_fingerprints(changed, "model=1")
    assert [i for i in range(len(frame)) if again[i] != prints[i]] == [3, 4]


def test_ablating_nothing_gives_the_prediction_and_everything_the_baseline(model: SpendModel, frame: pd.DataFrame) -> None:
    attributions = explain.attribute(model, frame)
    assert explain.ablate(model, frame, [set()] * len(frame)) == pytest.approx([a.prediction for a in attributions], rel=1e-5)
    everything = [{*a.features, explain.TEXT_KEY} for a in attributions]
    assert explain.ablate(model, frame, everything) == pytest.approx([a.baseline for a in attributions], rel=1e-5)
    # removing every text group is removing the whole text
    first = attributions[0]
    groups = {i.key for i in explain.text_items(first)}
    (whole,) = explain.ablate(model, frame.iloc[[0]], [groups])
    (lump,) = explain.ablate(model, frame.iloc[[0]], [{explain.TEXT_KEY}])
    assert whole == pytest.approx(lump, rel=1e-6)
    with pytest.raises(ConfigError, match="one set per row"):
        explain.ablate(model, frame, [set()])


def test_global_importance_per_feature_and_behaviour_kind(model: SpendModel, frame: pd.DataFrame, tmp_path) -> None:  # noqa: ANN001
    attributions = explain.attribute(model, frame)
    table = explain.global_importance(attributions)
    features = table[table["level"] == "feature"].set_index("name")
    assert set(features.index) == {*model.normaliser.columns, "text"} and (table["users"] == len(frame)).all()
    column = model.normaliser.columns[0]
    assert features.loc[column, "mean_abs_attribution"] == pytest.approx(np.mean([abs(a.features[column]) for a in attributions]))
    assert features.loc["text", "mean_attribution"] == pytest.approx(np.mean([a.text_total for a in attributions]))
    kinds = table[table["level"] == "kind"].set_index("name")
    assert {"totals", "orders", "categories", "searches", "reviews"} <= set(kinds.index)  # V2_TEXT has each kind
    # per user the kinds add up to the text's total, so their signed means add up to the text's mean
    assert kinds["mean_attribution"].sum() == pytest.approx(features.loc["text", "mean_attribution"], abs=1e-9)
    assert (table["mean_abs_attribution"] >= table["mean_attribution"].abs() - 1e-12).all()
    assert explain.item_kind("text:search:laptop") == "searches" and explain.item_kind("recency_days") == "recency_days"

    written = explain.write_global_importance(model, frame, tmp_path / "evaluation", users=8, seed=1)
    assert (tmp_path / "evaluation" / explain.IMPORTANCE_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pd.testing.assert_frame_equal(explain.read_global_importance(tmp_path / "evaluation" / explain.IMPORTANCE_TABLE), written)
    assert written["users"].iloc[0] == 8 and explain.read_global_importance(tmp_path / "missing.json") is None
    # the retrain's default goes through the head with the approximate split: the same head-column and text totals'
    # sizes as the exact path (agreeing closely, not exactly: another path), kinds adding up to the text
    fast = explain.global_importance(explain.attribute_head(model, frame, split_text=True)).set_index(["level", "name"])
    exact = table.set_index(["level", "name"])
    spread = exact.loc["feature", "mean_abs_attribution"].sum()
    for name in ("text", column):
        assert abs(fast.loc[("feature", name), "mean_abs_attribution"] - exact.loc[("feature", name), "mean_abs_attribution"]) <= 0.05 * spread
    assert fast.loc["kind", "mean_attribution"].sum() == pytest.approx(fast.loc[("feature", "text"), "mean_attribution"], abs=1e-6)


def test_head_path_retries_and_logs_a_gap_above_the_tolerance(model: SpendModel, frame: pd.DataFrame, monkeypatch, caplog) -> None:  # noqa: ANN001
    real = explain._head_batch
    calls: list[int] = []

    def off_by_one(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - an injected fault: the text part 1.0 too large
        calls.append(args[-1])
        text, feats, predicted, at_base = real(*args, **kwargs)
        return text + 1.0, feats, predicted, at_base

    monkeypatch.setattr(explain, "_head_batch", off_by_one)
    with caplog.at_level("WARNING", logger="spendpred.explain"):
        out = explain.attribute_head(model, frame.head(3))
    assert calls == [explain.HEAD_STEPS, explain.RETRY_STEPS] and all(a.steps == explain.RETRY_STEPS for a in out)
    assert all(a.delta == pytest.approx(1.0, abs=1e-3) for a in out)
    assert sum("completeness gap of 1.0" in r.getMessage() for r in caplog.records) == 3
