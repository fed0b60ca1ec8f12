-- Drop the staging table at the end of the publishing transaction (PostgreSQL; ON COMMIT
-- DROP would do it at commit, this frees its space before the commit).
DROP TABLE IF EXISTS pg_temp.spendpred_publish_stage;
