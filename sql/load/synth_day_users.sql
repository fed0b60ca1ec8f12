-- One row per user signed up before a day, for spendpred.synth.append_day: the recent activity
-- that makes them act on the day (distinct active days, events and orders of the 90 days
-- before it, orders of the 365 days before it), whole days since signup, and what they are like (segment, mean completed
-- order amount, mean review rating). Only rows before the day are read. Ordered by user_id
-- in byte order, so the day's rows are the same on SQLite and PostgreSQL.
SELECT u.user_id,
       CAST({{days_between(:day_start, u.signup_at)}} AS DOUBLE PRECISION) AS tenure_days,
       u.segment,
       CAST(COALESCE(a.active_days_90d, 0) AS DOUBLE PRECISION) AS active_days_90d,
       CAST(COALESCE(e.events_90d, 0) AS DOUBLE PRECISION) AS events_90d,
       CAST(COALESCE(o.orders_90d, 0) AS DOUBLE PRECISION) AS orders_90d,
       CAST(COALESCE(o.orders_365d, 0) AS DOUBLE PRECISION) AS orders_365d,
       CAST(o.mean_amount AS DOUBLE PRECISION) AS mean_amount,
       CAST(r.mean_rating AS DOUBLE PRECISION) AS mean_rating
FROM users u
LEFT JOIN (
    SELECT user_id, COUNT(DISTINCT d) AS active_days_90d
    FROM (
        SELECT user_id, {{day(occurred_at)}} AS d FROM events WHERE occurred_at >= :start_90d AND occurred_at < :day_start
        UNION ALL
        SELECT user_id, {{day(ordered_at)}} AS d FROM orders WHERE ordered_at >= :start_90d AND ordered_at < :day_start
        UNION ALL
        SELECT user_id, {{day(created_at)}} AS d FROM reviews WHERE created_at >= :start_90d AND created_at < :day_start
    ) active
    GROUP BY user_id
) a ON a.user_id = u.user_id
LEFT JOIN (
    SELECT user_id, COUNT(*) AS events_90d
    FROM events
    WHERE occurred_at >= :start_90d AND occurred_at < :day_start
    GROUP BY user_id
) e ON e.user_id = u.user_id
LEFT JOIN (
    SELECT user_id,
           SUM(CASE WHEN ordered_at >= :start_90d THEN 1 ELSE 0 END) AS orders_90d,
           SUM(CASE WHEN ordered_at >= :start_365d THEN 1 ELSE 0 END) AS orders_365d,
           AVG(CASE WHEN status = 'completed' THEN CAST(amount AS DOUBLE PRECISION) END) AS mean_amount
    FROM orders
    WHERE ordered_at < :day_start
    GROUP BY user_id
) o ON o.user_id = u.user_id
LEFT JOIN (
    SELECT user_id, AVG(CAST(rating AS DOUBLE PRECISION)) AS mean_rating
    FROM reviews
    WHERE created_at < :day_start
    GROUP BY user_id
) r ON r.user_id = u.user_id
WHERE u.signup_at < :day_start
ORDER BY u.user_id {{byte_order}}
