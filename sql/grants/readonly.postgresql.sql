-- Read-only access for downstream readers (recommendation, churn systems), PostgreSQL.
--
-- The role (which must already exist) is read from the setting spendpred.readonly_role,
-- so its name is never pasted into SQL text. It gets USAGE on schema spendpred and SELECT
-- on the two views, and nothing else: any other privilege it holds on the schema or on
-- its tables and views is revoked first, so re-running the script is safe. Views run with
-- their owner's rights, so the role reads scores through the views without any right on
-- the tables underneath. Run after `spendpred db init` (the views must exist):
--
--   psql "$URL" -v ON_ERROR_STOP=1 -c "SET spendpred.readonly_role = 'churn_reader'" \
--        -f sql/grants/readonly.postgresql.sql
--
-- or from Python: spendpred.publish.grant_readonly(engine, "churn_reader").
DO $$
DECLARE
    reader text := current_setting('spendpred.readonly_role', true);
BEGIN
    IF reader IS NULL OR reader = '' THEN
        RAISE EXCEPTION 'spendpred.readonly_role is not set'
            USING HINT = 'SET spendpred.readonly_role = ''<role>'' before running this script';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = reader) THEN
        RAISE EXCEPTION 'role % does not exist', reader
            USING HINT = format('create it first, e.g. CREATE ROLE %I LOGIN PASSWORD ''...''', reader);
    END IF;
    EXECUTE format('REVOKE ALL ON SCHEMA spendpred FROM %I', reader);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA spendpred FROM %I', reader);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA spendpred FROM %I', reader);
    EXECUTE format('GRANT USAGE ON SCHEMA spendpred TO %I', reader);
    EXECUTE format(
        'GRANT SELECT ON spendpred.user_spend_tier_current, spendpred.user_spend_tier_changes TO %I',
        reader
    );
END
$$;
