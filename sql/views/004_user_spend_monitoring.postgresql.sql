-- user_spend_realized_metrics, user_spend_drift and user_spend_estimated_performance (PostgreSQL): the monitoring tables as views,
-- so that the read-only role (sql/grants/readonly.postgresql.sql) reads them without any right
-- on the tables. Idempotent: CREATE OR REPLACE keeps the grants given to readers.
CREATE OR REPLACE VIEW spendpred.user_spend_realized_metrics AS
SELECT m.as_of, m.horizon_days, m.model_version, m.scorer, m.metric, m.value, m.ci_low, m.ci_high, m.evaluated_at
FROM spendpred.partition_metrics AS m;

COMMENT ON VIEW spendpred.user_spend_realized_metrics IS
    'Realized performance of each matured published partition (scorer model: the published scores; past_spend and bgnbd_gamma_gamma: the baselines as of the same date for the same users), with 95% paired-bootstrap intervals.';

CREATE OR REPLACE VIEW spendpred.user_spend_drift AS
SELECT d.as_of, d.model_version, d.feature, d.psi, d.statistic, d.status, d.computed_at
FROM spendpred.drift_metrics AS d;

COMMENT ON VIEW spendpred.user_spend_drift IS
    'Each night''s input and score drift against the champion''s training reference: PSI, Kolmogorov-Smirnov statistic, status ok/warn/alert.';

CREATE OR REPLACE VIEW spendpred.user_spend_estimated_performance AS
SELECT e.as_of, e.horizon_days, e.model_version, e.metric, e.value AS estimated, m.value AS realized,
       m.ci_low AS realized_ci_low, m.ci_high AS realized_ci_high, e.value - m.value AS estimate_error,
       e.users, e.computed_at, m.evaluated_at
FROM spendpred.estimated_metrics AS e
LEFT JOIN spendpred.partition_metrics AS m
  ON m.as_of = e.as_of AND m.horizon_days = e.horizon_days AND m.model_version = e.model_version
 AND m.scorer = 'model' AND m.metric = e.metric;

COMMENT ON VIEW spendpred.user_spend_estimated_performance IS
    'Each night''s RMSE and MAE estimated before labels exist (direct loss estimation), beside the realized value once the partition matures (NULL until then).';
