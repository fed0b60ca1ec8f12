-- The most recent orders (any status), searches and reviews of each user before cutoff,
-- for the text serialisation (SQLite and PostgreSQL). At most max_orders / max_searches /
-- max_reviews rows per user and kind (ROW_NUMBER per user), so the result stays a few rows
-- per user. Ordered by user_id in byte order (BINARY on SQLite, "C" on PostgreSQL), like features.sql,
-- so spendpred.behaviour merges the two streams chunk by chunk. Ids may be text or integers in
-- the warehouse: user_id is returned as text.
SELECT user_id, kind, at, amount, category, status, body, rating
FROM (
    SELECT {{text_id(user_id)}} AS user_id, 'order' AS kind, ordered_at AS at, CAST(amount AS DOUBLE PRECISION) AS amount,
           category, status, CAST(NULL AS TEXT) AS body, CAST(NULL AS INTEGER) AS rating
    FROM (
        SELECT o.*, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ordered_at DESC, order_id DESC) AS rn
        FROM orders o
        WHERE ordered_at < :cutoff
    ) ranked_orders
    WHERE rn <= :max_orders
    UNION ALL
    SELECT {{text_id(user_id)}} AS user_id, 'search' AS kind, occurred_at AS at, CAST(NULL AS DOUBLE PRECISION) AS amount,
           CAST(NULL AS TEXT) AS category, CAST(NULL AS TEXT) AS status, query AS body,
           CAST(NULL AS INTEGER) AS rating
    FROM (
        SELECT ev.*, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY occurred_at DESC, query DESC) AS rn
        FROM events ev
        WHERE event_type = 'search' AND query IS NOT NULL AND query <> '' AND occurred_at < :cutoff
    ) ranked_searches
    WHERE rn <= :max_searches
    UNION ALL
    SELECT {{text_id(user_id)}} AS user_id, 'review' AS kind, created_at AS at, CAST(NULL AS DOUBLE PRECISION) AS amount,
           CAST(NULL AS TEXT) AS category, CAST(NULL AS TEXT) AS status, body, rating
    FROM (
        SELECT rv.*, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at DESC, rating DESC, body DESC) AS rn
        FROM reviews rv
        WHERE created_at < :cutoff
    ) ranked_reviews
    WHERE rn <= :max_reviews
) items
ORDER BY CAST(user_id AS TEXT) {{byte_order}}, kind, at DESC
