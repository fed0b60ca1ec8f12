-- Read-only access for downstream readers (recommendation, churn systems), PostgreSQL.
--
-- The role (which must already exist) is read from the setting spendpred.readonly_role,
-- so its name is never pasted into SQL text. It gets USAGE on schema spendpred and SELECT
-- on the views in the array `granted` below, and nothing else. That array is the one list of
-- what a reader may read: spendpred.publish.readonly_views() reads it from this file (what
-- `spendpred db grant-readonly` reports as granted), so a view for readers is added there only:
-- any other privilege granted to it directly on the schema or on its tables and views is
-- revoked first, so re-running the script is safe.
-- Views run with their owner's rights, so the role reads scores through the views without
-- any right on the tables underneath. Run after `spendpred db init` (the views must exist):
--
--   psql "$URL" -v ON_ERROR_STOP=1 -c "SET spendpred.readonly_role = 'churn_reader'" \
--        -f sql/grants/readonly.postgresql.sql
--
-- or from Python: spendpred.publish.grant_readonly(engine, "churn_reader").
--
-- A role that could still write afterwards is refused and nothing changes (the whole
-- block is one statement, so the revokes are rolled back with it): the role running the
-- script, a superuser, a role owning (or a member of a role owning) the schema or one of its
-- relations, and a role that keeps INSERT, UPDATE, DELETE, TRUNCATE or CREATE through
-- another role or PUBLIC. Read-only means read-only, and a grant never takes rights away
-- from the warehouse's owner.
DO $$
DECLARE
    reader text := current_setting('spendpred.readonly_role', true);
    -- what a reader may read (schema spendpred), in this order; nothing else is granted
    granted text[] := ARRAY[
        'user_spend_tier_current', 'user_spend_tier_changes', 'user_spend_tier_thresholds',
        'user_spend_realized_metrics', 'user_spend_drift', 'current_user_spend_reasons',
        'user_spend_estimated_performance'
    ];
    owner_role text;
    writable text;
BEGIN
    IF reader IS NULL OR reader = '' THEN
        RAISE EXCEPTION 'spendpred.readonly_role is not set'
            USING HINT = 'SET spendpred.readonly_role = ''<role>'' before running this script';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = reader) THEN
        RAISE EXCEPTION 'role % does not exist', reader
            USING HINT = format('create it first, e.g. CREATE ROLE %I LOGIN PASSWORD ''...''', reader);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'spendpred') THEN
        RAISE EXCEPTION 'schema spendpred does not exist'
            USING HINT = 'run `spendpred db init` first';
    END IF;
    IF reader IN (current_user, session_user) OR pg_has_role(reader, current_user, 'MEMBER') THEN
        RAISE EXCEPTION 'role % is the role that runs this grant (it owns or writes the warehouse), not a reader', reader
            USING HINT = 'create a separate role for readers, e.g. CREATE ROLE churn_reader LOGIN PASSWORD ''...''';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = reader AND rolsuper) THEN
        RAISE EXCEPTION 'role % is a superuser: it can write everything, so it cannot be made read-only', reader
            USING HINT = 'create a separate role for readers, e.g. CREATE ROLE churn_reader LOGIN PASSWORD ''...''';
    END IF;
    SELECT o.rolname INTO owner_role
    FROM (
        SELECT nspowner AS owner FROM pg_namespace WHERE nspname = 'spendpred'
        UNION ALL
        SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'spendpred'
    ) AS owners
    JOIN pg_roles o ON o.oid = owners.owner
    WHERE pg_has_role(reader, owners.owner, 'MEMBER')
    LIMIT 1;
    IF owner_role IS NOT NULL THEN
        RAISE EXCEPTION 'role % owns the warehouse (it is or belongs to %, the owner of schema spendpred or its tables), not a reader', reader, owner_role
            USING HINT = 'create a separate role for readers, e.g. CREATE ROLE churn_reader LOGIN PASSWORD ''...''';
    END IF;
    EXECUTE format('REVOKE ALL ON SCHEMA spendpred FROM %I', reader);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA spendpred FROM %I', reader);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA spendpred FROM %I', reader);
    EXECUTE format('GRANT USAGE ON SCHEMA spendpred TO %I', reader);
    EXECUTE format(
        'GRANT SELECT ON %s TO %I',
        (SELECT string_agg(format('spendpred.%I', view_name), ', ' ORDER BY n)
         FROM unnest(granted) WITH ORDINALITY AS listed(view_name, n)),
        reader
    );
    -- what the role could still do through other roles or PUBLIC: refuse, rolling everything back
    SELECT string_agg(what, ', ' ORDER BY what) INTO writable
    FROM (
        SELECT 'CREATE on schema spendpred' AS what WHERE has_schema_privilege(reader, 'spendpred', 'CREATE')
        UNION ALL
        SELECT format('%s on %I.%I', p.privilege, n.nspname, c.relname)
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(privilege)
        WHERE n.nspname = 'spendpred' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND has_table_privilege(reader, c.oid, p.privilege)
    ) AS rights;
    IF writable IS NOT NULL THEN
        RAISE EXCEPTION 'role % can write the warehouse through another role or PUBLIC (%), so it cannot be made read-only', reader, writable
            USING HINT = 'revoke those rights (or its membership in the writing role) first, or use a separate role for readers';
    END IF;
END
$$;
