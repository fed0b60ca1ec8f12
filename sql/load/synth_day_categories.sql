-- Orders per user and category before a day (spendpred.synth.append_day: each user's favourite
-- category is the one they ordered most). Portable: the same SQL runs on SQLite and PostgreSQL.
SELECT user_id, category, COUNT(*) AS n
FROM orders
WHERE ordered_at < :day_start AND category IS NOT NULL
GROUP BY user_id, category
ORDER BY user_id {{byte_order}}, n DESC, category {{byte_order}}
