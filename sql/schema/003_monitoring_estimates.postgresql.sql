-- Estimated performance before labels exist, in schema spendpred (PostgreSQL; SQLite: 003_monitoring_estimates.sql).
-- estimated_metrics: each night's RMSE and MAE of the published partition as estimated from the
--   champion's error model (direct loss estimation, spendpred.monitoring.estimate_errors), one row
--   per as_of, horizon and metric; the realized value joins it once the partition matures (view
--   user_spend_estimated_performance).
CREATE TABLE IF NOT EXISTS spendpred.estimated_metrics (
    as_of         DATE NOT NULL,
    model_version TEXT NOT NULL,
    horizon_days  INTEGER NOT NULL CHECK (horizon_days > 0),
    metric        TEXT NOT NULL,
    value         DOUBLE PRECISION,
    users         INTEGER NOT NULL,
    computed_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (as_of, horizon_days, metric)
);
