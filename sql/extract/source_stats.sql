-- Row counts and newest timestamps of the source relations visible to a snapshot: rows
-- before cutoff (end of the as-of date). Used for the manifest and the freshness check.
-- Portable: the same SQL runs on SQLite and PostgreSQL.
SELECT
    (SELECT COUNT(*) FROM users WHERE signup_at < :cutoff) AS users_count,
    (SELECT COUNT(*) FROM orders WHERE ordered_at < :cutoff) AS orders_count,
    (SELECT COUNT(*) FROM events WHERE occurred_at < :cutoff) AS events_count,
    (SELECT COUNT(*) FROM reviews WHERE created_at < :cutoff) AS reviews_count,
    (SELECT MAX(signup_at) FROM users WHERE signup_at < :cutoff) AS users_max,
    (SELECT MAX(ordered_at) FROM orders WHERE ordered_at < :cutoff) AS orders_max,
    (SELECT MAX(occurred_at) FROM events WHERE occurred_at < :cutoff) AS events_max,
    (SELECT MAX(created_at) FROM reviews WHERE created_at < :cutoff) AS reviews_max
