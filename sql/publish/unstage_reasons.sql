-- Drop the reasons' staging table at the end of the publishing transaction (SQLite).
DROP TABLE IF EXISTS temp.spendpred_reasons_stage;
