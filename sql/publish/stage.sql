-- Staging for publish_scores (SQLite): a temp table private to the connection, emptied
-- first in case an earlier publish on this pooled connection failed before dropping it.
DROP TABLE IF EXISTS temp.spendpred_publish_stage;
CREATE TEMP TABLE spendpred_publish_stage (
    user_id         TEXT NOT NULL,
    predicted_spend DOUBLE PRECISION NOT NULL,
    tier            TEXT NOT NULL
);
