-- user_spend_tier_thresholds (PostgreSQL): the spend thresholds of every published run, one
-- row per run and tier (lower_bound NULL for the open bottom, upper_bound NULL for the open
-- top). The same rows as spendpred.tier_thresholds, as a view so that the read-only role
-- (sql/grants/readonly.postgresql.sql) reads them without any right on the table.
-- Idempotent: CREATE OR REPLACE keeps the grants given to readers.
CREATE OR REPLACE VIEW spendpred.user_spend_tier_thresholds AS
SELECT t.as_of, t.tier, t.lower_bound, t.upper_bound, t.model_version
FROM spendpred.tier_thresholds AS t;

COMMENT ON VIEW spendpred.user_spend_tier_thresholds IS
    'The spend thresholds of each published run: a tier holds predicted spend in [lower_bound, upper_bound), NULL an open end.';
