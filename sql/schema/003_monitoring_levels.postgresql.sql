-- Level corrections of the nightly scoring, in schema spendpred (PostgreSQL; SQLite: 003_monitoring_levels.sql).
-- level_corrections: one row per published night scored with SPENDPRED_LEVEL_CORRECTION on: the
--   factor its predicted_spend was multiplied by before tiering (1 / the realized predicted/actual
--   total ratio of the latest matured partition of the same model version, that partition's own
--   factor divided out; 1 while none has matured), unclipped_factor before the clip to [0.25, 4],
--   and based_on_as_of the partition it comes from (NULL: none). spendpred.monitoring.level_factor.
CREATE TABLE IF NOT EXISTS spendpred.level_corrections (
    as_of            DATE NOT NULL PRIMARY KEY,
    model_version    TEXT NOT NULL,
    factor           DOUBLE PRECISION NOT NULL CHECK (factor > 0),
    unclipped_factor DOUBLE PRECISION,
    based_on_as_of   DATE,
    created_at       TIMESTAMP NOT NULL
);
