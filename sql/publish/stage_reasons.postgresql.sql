-- Staging for the reasons (PostgreSQL), inside the publishing transaction (after the scores'
-- staging, which locks user_spend_scores first).
LOCK TABLE user_spend_reasons IN SHARE ROW EXCLUSIVE MODE;
CREATE TEMP TABLE spendpred_reasons_stage (
    user_id      TEXT NOT NULL,
    rank         INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    contribution DOUBLE PRECISION NOT NULL,
    feature      TEXT NOT NULL
) ON COMMIT DROP;
