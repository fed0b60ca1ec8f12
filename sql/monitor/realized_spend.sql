-- One published partition with each scored user's realized spend (spendpred.monitoring.read_realized).
-- Bound parameters: as_of (the partition), past_start (cutoff - H days), cutoff (as_of + 1 day,
-- 00:00), label_end (as_of + H + 1 day, 00:00).
-- actual_spend: completed-order spend in (as_of, as_of + H], the label window of the extract
-- (sql/extract/features.sql); nothing at or after label_end is read. past_spend: completed spend
-- in the H days up to the end of as_of (the past-spend baseline as of that date). Both 0 for a
-- user without such orders; rounded to cents as the snapshot's money is.
WITH actual AS (
    SELECT {{text_id(user_id)}} AS user_id, SUM(CAST(amount AS NUMERIC)) AS spend
    FROM orders
    WHERE status = 'completed' AND ordered_at >= :cutoff AND ordered_at < :label_end
    GROUP BY {{text_id(user_id)}}
),
past AS (
    SELECT {{text_id(user_id)}} AS user_id, SUM(CAST(amount AS NUMERIC)) AS spend
    FROM orders
    WHERE status = 'completed' AND ordered_at >= :past_start AND ordered_at < :cutoff
    GROUP BY {{text_id(user_id)}}
)
SELECT
    s.user_id,
    s.predicted_spend,
    s.tier,
    s.model_version,
    CAST(ROUND(COALESCE(a.spend, 0), 2) AS DOUBLE PRECISION) AS actual_spend,
    CAST(ROUND(COALESCE(p.spend, 0), 2) AS DOUBLE PRECISION) AS past_spend
FROM user_spend_scores AS s
LEFT JOIN actual AS a ON a.user_id = s.user_id
LEFT JOIN past AS p ON p.user_id = s.user_id
WHERE s.as_of = :as_of
ORDER BY s.user_id {{byte_order}}
