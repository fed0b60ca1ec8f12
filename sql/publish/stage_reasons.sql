-- Staging for the reasons (SQLite), inside the publishing transaction; emptied first in case an
-- earlier publish on this pooled connection failed before dropping it.
DROP TABLE IF EXISTS temp.spendpred_reasons_stage;
CREATE TEMP TABLE spendpred_reasons_stage (
    user_id      TEXT NOT NULL,
    rank         INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    contribution DOUBLE PRECISION NOT NULL,
    feature      TEXT NOT NULL
);
