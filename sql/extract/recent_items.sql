-- The most recent orders (any status), searches and reviews of each user before cutoff,
-- for the text serialisation (SQLite and PostgreSQL). At most max_orders / max_searches /
-- max_reviews rows per user and kind (ROW_NUMBER per user), so the result stays a few rows
-- per user. Ordered by user_id in byte order (BINARY on SQLite, "C" on PostgreSQL), like features.sql,
-- so spendpred.behaviour merges the two streams chunk by chunk. Ids may be text or integers in
-- the warehouse: user_id is returned as text.
-- Source text is read raw ({{raw_text(x)}}: its bytes on SQLite, which stores whatever bytes it
-- was given; the value as it is on PostgreSQL, text or bytea) and decoded by spendpred.behaviour,
-- so a value that is not UTF-8 costs its row (counted, with its key), never the whole query.
-- A review body (body) and a search query (query) have their own columns, NULL elsewhere, and
-- reviews come first, so a bytea body decides the column's type on PostgreSQL.
SELECT user_id, kind, at, amount, category, status, body, query, rating
FROM (
    SELECT {{text_id(user_id)}} AS user_id, 'review' AS kind, {{raw_text(created_at)}} AS at,
           CAST(NULL AS DOUBLE PRECISION) AS amount, CAST(NULL AS TEXT) AS category, CAST(NULL AS TEXT) AS status,
           {{raw_text(body)}} AS body, CAST(NULL AS TEXT) AS query, rating
    FROM (
        SELECT rv.*, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at DESC, rating DESC, body DESC) AS rn
        FROM reviews rv
        WHERE created_at < :cutoff
    ) ranked_reviews
    WHERE rn <= :max_reviews
    UNION ALL
    SELECT {{text_id(user_id)}} AS user_id, 'order' AS kind, {{raw_text(ordered_at)}} AS at,
           CAST(amount AS DOUBLE PRECISION) AS amount, {{raw_text(category)}} AS category,
           {{raw_text(status)}} AS status, NULL AS body, CAST(NULL AS TEXT) AS query, CAST(NULL AS INTEGER) AS rating
    FROM (
        SELECT o.*, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ordered_at DESC, order_id DESC) AS rn
        FROM orders o
        WHERE ordered_at < :cutoff
    ) ranked_orders
    WHERE rn <= :max_orders
    UNION ALL
    SELECT {{text_id(user_id)}} AS user_id, 'search' AS kind, {{raw_text(occurred_at)}} AS at,
           CAST(NULL AS DOUBLE PRECISION) AS amount, CAST(NULL AS TEXT) AS category, CAST(NULL AS TEXT) AS status,
           NULL AS body, {{raw_text(query)}} AS query, CAST(NULL AS INTEGER) AS rating
    FROM (
        SELECT ev.*, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY occurred_at DESC, query DESC) AS rn
        FROM events ev
        WHERE event_type = 'search' AND query IS NOT NULL AND query <> '' AND occurred_at < :cutoff
    ) ranked_searches
    WHERE rn <= :max_searches
) items
ORDER BY CAST(user_id AS TEXT) {{byte_order}}, kind, at DESC
