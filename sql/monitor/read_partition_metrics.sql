-- Stored realized metrics of the partitions up to the bound last_as_of, oldest first (spendpred monitor).
SELECT as_of, model_version, scorer, metric, value, ci_low, ci_high, evaluated_at, horizon_days
FROM partition_metrics
WHERE as_of <= :last_as_of
ORDER BY as_of, horizon_days, model_version, scorer, metric
