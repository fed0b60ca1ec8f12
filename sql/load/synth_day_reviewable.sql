-- Completed or refunded orders of the 21 days before a day, which may get their review on the
-- day (spendpred.synth.append_day). Portable: the same SQL runs on SQLite and PostgreSQL.
SELECT user_id, category, status
FROM orders
WHERE ordered_at >= :start_21d AND ordered_at < :day_start AND status IN ('completed', 'refunded')
ORDER BY user_id {{byte_order}}, ordered_at, order_id {{byte_order}}
