-- user_spend_tier_changes (SQLite): the churn-warning feed. One row per user scored in
-- BOTH of the two latest as_of runs (users new in the latest run, or absent from it, are
-- not listed). With fewer than two runs the view is empty.
--   spend_change      current_spend - previous_spend
--   spend_change_pct  100 * spend_change / previous_spend; NULL when previous_spend = 0
--   movement          'up' | 'down' | 'same' by tier rank (high > medium > low)
--   churn_warning     1 when the user dropped at least one tier, or their predicted spend
--                     fell by more than 50% (current_spend < 0.5 * previous_spend); else 0
DROP VIEW IF EXISTS user_spend_tier_changes;

CREATE VIEW user_spend_tier_changes AS
WITH latest AS (
    SELECT MAX(as_of) AS as_of FROM user_spend_scores
),
previous AS (
    SELECT MAX(s.as_of) AS as_of
    FROM user_spend_scores AS s
    WHERE s.as_of < (SELECT as_of FROM latest)
),
paired AS (
    SELECT
        c.user_id,
        p.as_of AS previous_as_of,
        c.as_of AS current_as_of,
        p.tier AS previous_tier,
        c.tier AS current_tier,
        p.predicted_spend AS previous_spend,
        c.predicted_spend AS current_spend,
        CASE p.tier WHEN 'high' THEN 3 WHEN 'medium' THEN 2 ELSE 1 END AS previous_rank,
        CASE c.tier WHEN 'high' THEN 3 WHEN 'medium' THEN 2 ELSE 1 END AS current_rank
    FROM user_spend_scores AS c
    JOIN user_spend_scores AS p
        ON p.user_id = c.user_id
       AND p.as_of = (SELECT as_of FROM previous)
    WHERE c.as_of = (SELECT as_of FROM latest)
)
SELECT
    user_id,
    previous_as_of,
    current_as_of,
    previous_tier,
    current_tier,
    previous_spend,
    current_spend,
    current_spend - previous_spend AS spend_change,
    100.0 * (current_spend - previous_spend) / NULLIF(previous_spend, 0) AS spend_change_pct,
    CASE
        WHEN current_rank > previous_rank THEN 'up'
        WHEN current_rank < previous_rank THEN 'down'
        ELSE 'same'
    END AS movement,
    CASE WHEN current_rank < previous_rank OR current_spend < 0.5 * previous_spend THEN 1 ELSE 0 END AS churn_warning
FROM paired;
