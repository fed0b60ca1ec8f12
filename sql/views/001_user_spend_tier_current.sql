-- user_spend_tier_current (SQLite): each user's row from the most recent as_of in which
-- they were scored. A user missing from the latest run keeps their last score (check
-- as_of to see how fresh it is). Idempotent: dropped and re-created.
DROP VIEW IF EXISTS user_spend_tier_current;

CREATE VIEW user_spend_tier_current AS
SELECT user_id, as_of, predicted_spend, tier, model_name, model_version, scored_at
FROM (
    SELECT
        s.*,
        ROW_NUMBER() OVER (PARTITION BY s.user_id ORDER BY s.as_of DESC) AS recency
    FROM user_spend_scores AS s
) AS ranked
WHERE recency = 1;
