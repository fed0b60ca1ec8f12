-- Staging for publish_scores (PostgreSQL), run inside the publishing transaction.
-- The lock makes concurrent publishers wait for each other; readers are never blocked
-- (SHARE ROW EXCLUSIVE conflicts with writers only) and keep seeing the previous rows
-- until the transaction commits.
LOCK TABLE user_spend_scores IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE tier_thresholds IN SHARE ROW EXCLUSIVE MODE;
CREATE TEMP TABLE spendpred_publish_stage (
    user_id         TEXT NOT NULL,
    predicted_spend DOUBLE PRECISION NOT NULL,
    tier            TEXT NOT NULL
) ON COMMIT DROP;
