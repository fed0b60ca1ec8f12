-- user_spend_realized_metrics and user_spend_drift (PostgreSQL): the monitoring tables as views,
-- so that the read-only role (sql/grants/readonly.postgresql.sql) reads them without any right
-- on the tables. Idempotent: CREATE OR REPLACE keeps the grants given to readers.
CREATE OR REPLACE VIEW spendpred.user_spend_realized_metrics AS
SELECT m.as_of, m.horizon_days, m.model_version, m.scorer, m.metric, m.value, m.ci_low, m.ci_high, m.evaluated_at
FROM spendpred.partition_metrics AS m;

COMMENT ON VIEW spendpred.user_spend_realized_metrics IS
    'Realized performance of each matured published partition (scorer model: the published scores; past_spend: the baseline), with 95% paired-bootstrap intervals.';

CREATE OR REPLACE VIEW spendpred.user_spend_drift AS
SELECT d.as_of, d.model_version, d.feature, d.psi, d.statistic, d.status, d.computed_at
FROM spendpred.drift_metrics AS d;

COMMENT ON VIEW spendpred.user_spend_drift IS
    'Each night''s input and score drift against the champion''s training reference: PSI, Kolmogorov-Smirnov statistic, status ok/warn/alert.';
