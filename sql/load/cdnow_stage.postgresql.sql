-- The CDNOW customers being imported, in a session-private temporary table (PostgreSQL).
DROP TABLE IF EXISTS pg_temp.spendpred_cdnow_stage;
CREATE TEMPORARY TABLE spendpred_cdnow_stage (user_id TEXT PRIMARY KEY);
