-- Drop the reasons' staging table at the end of the publishing transaction (PostgreSQL).
DROP TABLE IF EXISTS pg_temp.spendpred_reasons_stage;
