-- Retrain requests of the nightly monitoring (SQLite: plain table; PostgreSQL: 003_monitoring_requests.postgresql.sql).
-- retrain_requests: one row per night whose monitoring crossed an alert threshold (a drift alert,
--   or a matured partition ranking below a baseline or below SPENDPRED_MONITOR_GINI_FLOOR):
--   decision 'requested' (the nightly emitted the asset event the weekly retrain is scheduled on)
--   or 'suppressed' (inside SPENDPRED_RETRAIN_COOLDOWN_DAYS of an earlier request), with the reasons.
CREATE TABLE IF NOT EXISTS retrain_requests (
    as_of          DATE NOT NULL PRIMARY KEY,
    model_version  TEXT NOT NULL,
    decision       TEXT NOT NULL CHECK (decision IN ('requested', 'suppressed')),
    reasons        TEXT NOT NULL,
    cooldown_until DATE,
    decided_at     TIMESTAMP NOT NULL
);
