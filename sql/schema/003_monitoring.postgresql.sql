-- Monitoring tables in schema spendpred (PostgreSQL; SQLite: 003_monitoring.sql).
-- partition_metrics: realized performance of a published partition once its horizon has ended
--   (spendpred.monitoring): one row per as_of, model version, scorer ('model': the published
--   scores; 'past_spend': the baseline as of the same date for the same users), metric and
--   horizon, with a paired-bootstrap 95% interval (NULL where a metric has none).
-- drift_metrics: tonight's inputs and scores against the champion's training reference, one row
--   per as_of and feature (predicted_spend included); status is ok, warn or alert.
CREATE TABLE IF NOT EXISTS spendpred.partition_metrics (
    as_of         DATE NOT NULL,
    model_version TEXT NOT NULL,
    scorer        TEXT NOT NULL,
    metric        TEXT NOT NULL,
    value         DOUBLE PRECISION,
    ci_low        DOUBLE PRECISION,
    ci_high       DOUBLE PRECISION,
    evaluated_at  TIMESTAMP NOT NULL,
    horizon_days  INTEGER NOT NULL CHECK (horizon_days > 0),
    PRIMARY KEY (as_of, horizon_days, model_version, scorer, metric)
);

CREATE TABLE IF NOT EXISTS spendpred.drift_metrics (
    as_of         DATE NOT NULL,
    model_version TEXT NOT NULL,
    feature       TEXT NOT NULL,
    psi           DOUBLE PRECISION,
    statistic     DOUBLE PRECISION,
    status        TEXT NOT NULL CHECK (status IN ('ok', 'warn', 'alert')),
    computed_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (as_of, feature)
);
