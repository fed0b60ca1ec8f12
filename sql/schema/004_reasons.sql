-- Reason codes published with the scores (spendpred.explain, spendpred.publish): the top reasons
-- of a partition's explained users, replaced with the partition in the same transaction.
CREATE TABLE IF NOT EXISTS user_spend_reasons (
    as_of            DATE NOT NULL,
    user_id          TEXT NOT NULL,
    rank             INTEGER NOT NULL CHECK (rank >= 1),
    reason           TEXT NOT NULL,
    contribution     DOUBLE PRECISION NOT NULL,
    feature          TEXT NOT NULL,
    template_version TEXT NOT NULL,
    model_version    TEXT NOT NULL,
    PRIMARY KEY (as_of, user_id, rank)
);
