-- Drop the staging table at the end of the publishing transaction (SQLite).
DROP TABLE IF EXISTS temp.spendpred_publish_stage;
