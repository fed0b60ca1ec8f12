-- Output tables in schema spendpred (PostgreSQL).
CREATE SCHEMA IF NOT EXISTS spendpred;

CREATE TABLE IF NOT EXISTS spendpred.user_spend_scores (
    as_of           DATE NOT NULL,
    user_id         TEXT NOT NULL,
    predicted_spend DOUBLE PRECISION NOT NULL CHECK (predicted_spend >= 0),
    tier            TEXT NOT NULL CHECK (tier IN ('high', 'medium', 'low')),
    model_name      TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    scored_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (as_of, user_id)
);
-- one user's history (user_spend_tier_current, the churn feed) without a full scan
CREATE INDEX IF NOT EXISTS user_spend_scores_user ON spendpred.user_spend_scores (user_id, as_of);

CREATE TABLE IF NOT EXISTS spendpred.tier_thresholds (
    as_of         DATE NOT NULL,
    tier          TEXT NOT NULL CHECK (tier IN ('high', 'medium', 'low')),
    lower_bound   DOUBLE PRECISION,
    upper_bound   DOUBLE PRECISION,
    model_version TEXT NOT NULL,
    PRIMARY KEY (as_of, tier)
);
