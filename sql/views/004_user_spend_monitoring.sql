-- user_spend_realized_metrics, user_spend_drift and user_spend_estimated_performance (SQLite): the monitoring tables as views, so
-- readers use views only. Idempotent: dropped and re-created.
DROP VIEW IF EXISTS user_spend_realized_metrics;

CREATE VIEW user_spend_realized_metrics AS
SELECT as_of, horizon_days, model_version, scorer, metric, value, ci_low, ci_high, evaluated_at
FROM partition_metrics;

DROP VIEW IF EXISTS user_spend_drift;

CREATE VIEW user_spend_drift AS
SELECT as_of, model_version, feature, psi, statistic, status, computed_at
FROM drift_metrics;

DROP VIEW IF EXISTS user_spend_estimated_performance;

CREATE VIEW user_spend_estimated_performance AS
SELECT e.as_of, e.horizon_days, e.model_version, e.metric, e.value AS estimated, m.value AS realized,
       m.ci_low AS realized_ci_low, m.ci_high AS realized_ci_high, e.value - m.value AS estimate_error,
       e.users, e.computed_at, m.evaluated_at
FROM estimated_metrics AS e
LEFT JOIN partition_metrics AS m
  ON m.as_of = e.as_of AND m.horizon_days = e.horizon_days AND m.model_version = e.model_version
 AND m.scorer = 'model' AND m.metric = e.metric;
