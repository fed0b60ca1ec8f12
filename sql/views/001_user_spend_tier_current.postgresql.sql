-- user_spend_tier_current (PostgreSQL): each user's row from the most recent as_of in
-- which they were scored. A user missing from the latest run keeps their last score
-- (check as_of to see how fresh it is). Idempotent: CREATE OR REPLACE keeps the grants
-- given to readers (sql/grants/readonly.postgresql.sql).
CREATE OR REPLACE VIEW spendpred.user_spend_tier_current AS
SELECT DISTINCT ON (s.user_id)
    s.user_id,
    s.as_of,
    s.predicted_spend,
    s.tier,
    s.model_name,
    s.model_version,
    s.scored_at
FROM spendpred.user_spend_scores AS s
ORDER BY s.user_id, s.as_of DESC;

COMMENT ON VIEW spendpred.user_spend_tier_current IS
    'Each user''s latest score and tier: the row from the most recent as_of in which the user was scored.';
