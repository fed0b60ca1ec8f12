-- Point-in-time behaviour features, one row per user who signed up before cutoff (SQLite and
-- PostgreSQL: the double-brace dialect fragments are rendered by spendpred.warehouse.load_sql).
-- Bound parameters (set by spendpred.behaviour.extract_snapshot):
--   as_of (date D), cutoff (D + 1 day, 00:00), start_30d / start_90d / start_365d
--   (cutoff - 30/90/365 days), past_start (cutoff - H days), label_end (D + H + 1 day),
--   with_labels (1 or 0).
-- Only rows with a timestamp < cutoff feed the features; the label sees only
-- [cutoff, label_end). Only status = 'completed' orders count as spend or frequency.
-- BG/NBD inputs (spendpred.model.hybrid): purchase_days (distinct days with a completed
-- order), first_purchase_days (days from the first one to D; 0 without one), repeat_value
-- (mean spend of the repeat purchase days: total minus the first day's spend, over days - 1).
-- Sentinels: recency_days = tenure_days when the user has no completed order,
-- days_since_last_event = tenure_days when the user has no event, mean_rating = 0 and
-- avg_basket = 0 when undefined. Rows come ordered by user_id in byte order (collation
-- BINARY on SQLite, "C" on PostgreSQL), for the merge with recent_items.
-- Warehouse types as they come: ids may be text or integers (compared and returned as text),
-- money any numeric type (summed as NUMERIC, so ROUND(x, 2) exists for a double precision or
-- real column too), timestamps with or without time zone (PostgreSQL sessions run in UTC).
WITH o AS (
    SELECT {{text_id(user_id)}} AS user_id,
           MAX(ordered_at) AS last_order_at,
           MIN(ordered_at) AS first_order_at,
           COUNT(DISTINCT {{day(ordered_at)}}) AS purchase_days,
           COUNT(*) AS frequency_all,
           SUM(CASE WHEN ordered_at >= :start_30d THEN 1 ELSE 0 END) AS frequency_30d,
           SUM(CASE WHEN ordered_at >= :start_90d THEN 1 ELSE 0 END) AS frequency_90d,
           SUM(CASE WHEN ordered_at >= :start_365d THEN 1 ELSE 0 END) AS frequency_365d,
           SUM(CAST(amount AS NUMERIC)) AS monetary_all,
           SUM(CASE WHEN ordered_at >= :start_30d THEN CAST(amount AS NUMERIC) ELSE 0 END) AS monetary_30d,
           SUM(CASE WHEN ordered_at >= :start_90d THEN CAST(amount AS NUMERIC) ELSE 0 END) AS monetary_90d,
           SUM(CASE WHEN ordered_at >= :start_365d THEN CAST(amount AS NUMERIC) ELSE 0 END) AS monetary_365d,
           SUM(CASE WHEN ordered_at >= :past_start THEN CAST(amount AS NUMERIC) ELSE 0 END) AS past_spend,
           COUNT(DISTINCT category) AS category_diversity
    FROM orders
    WHERE status = 'completed' AND ordered_at < :cutoff
    GROUP BY {{text_id(user_id)}}
),
first_day AS (
    SELECT {{text_id(c.user_id)}} AS user_id, SUM(CAST(c.amount AS NUMERIC)) AS first_day_spend
    FROM orders c
    JOIN (
        SELECT {{text_id(user_id)}} AS user_id, MIN({{day(ordered_at)}}) AS first_day
        FROM orders
        WHERE status = 'completed' AND ordered_at < :cutoff
        GROUP BY {{text_id(user_id)}}
    ) f ON f.user_id = {{text_id(c.user_id)}} AND {{day(c.ordered_at)}} = f.first_day
    WHERE c.status = 'completed' AND c.ordered_at < :cutoff
    GROUP BY {{text_id(c.user_id)}}
),
lab AS (
    SELECT {{text_id(user_id)}} AS user_id, SUM(CAST(amount AS NUMERIC)) AS label
    FROM orders
    WHERE status = 'completed' AND ordered_at >= :cutoff AND ordered_at < :label_end
      AND :with_labels = 1
    GROUP BY {{text_id(user_id)}}
),
e AS (
    SELECT {{text_id(user_id)}} AS user_id,
           MAX(occurred_at) AS last_event_at,
           SUM(CASE WHEN event_type = 'view' AND occurred_at >= :start_30d THEN 1 ELSE 0 END) AS views_30d,
           SUM(CASE WHEN event_type = 'view' AND occurred_at >= :start_90d THEN 1 ELSE 0 END) AS views_90d,
           SUM(CASE WHEN event_type = 'click' AND occurred_at >= :start_30d THEN 1 ELSE 0 END) AS clicks_30d,
           SUM(CASE WHEN event_type = 'click' AND occurred_at >= :start_90d THEN 1 ELSE 0 END) AS clicks_90d,
           SUM(CASE WHEN event_type = 'add_to_cart' AND occurred_at >= :start_30d THEN 1 ELSE 0 END) AS add_to_carts_30d,
           SUM(CASE WHEN event_type = 'add_to_cart' AND occurred_at >= :start_90d THEN 1 ELSE 0 END) AS add_to_carts_90d,
           SUM(CASE WHEN event_type = 'search' AND occurred_at >= :start_30d THEN 1 ELSE 0 END) AS searches_30d,
           SUM(CASE WHEN event_type = 'search' AND occurred_at >= :start_90d THEN 1 ELSE 0 END) AS searches_90d,
           SUM(CASE WHEN event_type = 'wishlist' AND occurred_at >= :start_30d THEN 1 ELSE 0 END) AS wishlists_30d,
           SUM(CASE WHEN event_type = 'wishlist' AND occurred_at >= :start_90d THEN 1 ELSE 0 END) AS wishlists_90d
    FROM events
    WHERE occurred_at < :cutoff
    GROUP BY {{text_id(user_id)}}
),
r AS (
    SELECT {{text_id(user_id)}} AS user_id, COUNT(*) AS review_count, AVG(rating) AS mean_rating
    FROM reviews
    WHERE created_at < :cutoff
    GROUP BY {{text_id(user_id)}}
)
SELECT
    CAST(u.user_id AS TEXT) AS user_id,
    CAST({{days_between(:as_of, COALESCE(o.last_order_at, u.signup_at))}} AS DOUBLE PRECISION) AS recency_days,
    CAST({{days_between(:as_of, u.signup_at)}} AS DOUBLE PRECISION) AS tenure_days,
    CAST(COALESCE(o.frequency_30d, 0) AS DOUBLE PRECISION) AS frequency_30d,
    CAST(COALESCE(o.frequency_90d, 0) AS DOUBLE PRECISION) AS frequency_90d,
    CAST(COALESCE(o.frequency_365d, 0) AS DOUBLE PRECISION) AS frequency_365d,
    CAST(COALESCE(o.frequency_all, 0) AS DOUBLE PRECISION) AS frequency_all,
    CAST(ROUND(COALESCE(o.monetary_30d, 0), 2) AS DOUBLE PRECISION) AS monetary_30d,
    CAST(ROUND(COALESCE(o.monetary_90d, 0), 2) AS DOUBLE PRECISION) AS monetary_90d,
    CAST(ROUND(COALESCE(o.monetary_365d, 0), 2) AS DOUBLE PRECISION) AS monetary_365d,
    CAST(ROUND(COALESCE(o.monetary_all, 0), 2) AS DOUBLE PRECISION) AS monetary_all,
    CAST(CASE WHEN o.frequency_all > 0 THEN 1.0 * o.monetary_all / o.frequency_all ELSE 0 END AS DOUBLE PRECISION) AS avg_basket,
    CAST(COALESCE(o.category_diversity, 0) AS DOUBLE PRECISION) AS category_diversity,
    CAST(COALESCE(e.views_30d, 0) AS DOUBLE PRECISION) AS views_30d,
    CAST(COALESCE(e.views_90d, 0) AS DOUBLE PRECISION) AS views_90d,
    CAST(COALESCE(e.clicks_30d, 0) AS DOUBLE PRECISION) AS clicks_30d,
    CAST(COALESCE(e.clicks_90d, 0) AS DOUBLE PRECISION) AS clicks_90d,
    CAST(COALESCE(e.add_to_carts_30d, 0) AS DOUBLE PRECISION) AS add_to_carts_30d,
    CAST(COALESCE(e.add_to_carts_90d, 0) AS DOUBLE PRECISION) AS add_to_carts_90d,
    CAST(COALESCE(e.searches_30d, 0) AS DOUBLE PRECISION) AS searches_30d,
    CAST(COALESCE(e.searches_90d, 0) AS DOUBLE PRECISION) AS searches_90d,
    CAST(COALESCE(e.wishlists_30d, 0) AS DOUBLE PRECISION) AS wishlists_30d,
    CAST(COALESCE(e.wishlists_90d, 0) AS DOUBLE PRECISION) AS wishlists_90d,
    CAST(COALESCE(r.review_count, 0) AS DOUBLE PRECISION) AS review_count,
    CAST(COALESCE(r.mean_rating, 0) AS DOUBLE PRECISION) AS mean_rating,
    CAST({{days_between(:as_of, COALESCE(e.last_event_at, u.signup_at))}} AS DOUBLE PRECISION) AS days_since_last_event,
    CAST(COALESCE(o.purchase_days, 0) AS DOUBLE PRECISION) AS purchase_days,
    CAST(CASE WHEN o.first_order_at IS NULL THEN 0 ELSE {{days_between(:as_of, o.first_order_at)}} END AS DOUBLE PRECISION) AS first_purchase_days,
    CAST(CASE WHEN o.purchase_days > 1
              THEN ROUND((o.monetary_all - fd.first_day_spend) / (o.purchase_days - 1), 2) ELSE 0 END AS DOUBLE PRECISION) AS repeat_value,
    CAST(ROUND(COALESCE(o.past_spend, 0), 2) AS DOUBLE PRECISION) AS past_spend,
    CAST(ROUND(COALESCE(lab.label, 0), 2) AS DOUBLE PRECISION) AS label,
    CASE WHEN e.last_event_at IS NULL THEN 0 ELSE 1 END AS has_events
FROM users u
LEFT JOIN o ON o.user_id = {{text_id(u.user_id)}}
LEFT JOIN first_day fd ON fd.user_id = {{text_id(u.user_id)}}
LEFT JOIN lab ON lab.user_id = {{text_id(u.user_id)}}
LEFT JOIN e ON e.user_id = {{text_id(u.user_id)}}
LEFT JOIN r ON r.user_id = {{text_id(u.user_id)}}
WHERE u.signup_at < :cutoff
ORDER BY CAST(u.user_id AS TEXT) {{byte_order}}
