-- Completed spend per user and calendar day up to the end of as_of: the BG/NBD x Gamma-Gamma
-- baseline's input as of a partition's date (spendpred.monitoring.read_completed_orders).
-- Bound parameter: cutoff (as_of + 1 day, 00:00); nothing at or after it is read. Every buyer
-- by as_of is returned (the baseline is fitted on the whole population, as in training), one
-- row per user and day (spendpred.btyd counts purchase days, so a day's orders are one purchase).
SELECT {{text_id(user_id)}} AS user_id, {{day(ordered_at)}} AS ordered_at, SUM(CAST(amount AS NUMERIC)) AS amount
FROM orders
WHERE status = 'completed' AND ordered_at < :cutoff
GROUP BY {{text_id(user_id)}}, {{day(ordered_at)}}
