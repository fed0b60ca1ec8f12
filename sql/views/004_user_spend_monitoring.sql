-- user_spend_realized_metrics and user_spend_drift (SQLite): the monitoring tables as views, so
-- readers use views only. Idempotent: dropped and re-created.
DROP VIEW IF EXISTS user_spend_realized_metrics;

CREATE VIEW user_spend_realized_metrics AS
SELECT as_of, horizon_days, model_version, scorer, metric, value, ci_low, ci_high, evaluated_at
FROM partition_metrics;

DROP VIEW IF EXISTS user_spend_drift;

CREATE VIEW user_spend_drift AS
SELECT as_of, model_version, feature, psi, statistic, status, computed_at
FROM drift_metrics;
