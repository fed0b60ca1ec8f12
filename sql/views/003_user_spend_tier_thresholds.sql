-- user_spend_tier_thresholds (SQLite): the spend thresholds of every published run, one row
-- per run and tier (lower_bound NULL for the open bottom, upper_bound NULL for the open top).
-- The same rows as tier_thresholds, as a view so readers use views only. Idempotent: dropped
-- and re-created.
DROP VIEW IF EXISTS user_spend_tier_thresholds;

CREATE VIEW user_spend_tier_thresholds AS
SELECT as_of, tier, lower_bound, upper_bound, model_version
FROM tier_thresholds;
