-- The CDNOW customers being imported, in a session-private temporary table (SQLite).
DROP TABLE IF EXISTS temp.spendpred_cdnow_stage;
CREATE TEMPORARY TABLE spendpred_cdnow_stage (user_id TEXT PRIMARY KEY);
