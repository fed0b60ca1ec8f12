-- Each night's estimate beside the realized value once the partition has matured (spendpred monitor, the page).
SELECT as_of, horizon_days, model_version, metric, estimated, realized, realized_ci_low, realized_ci_high,
       estimate_error, users, computed_at
FROM user_spend_estimated_performance
WHERE as_of <= :last_as_of
ORDER BY as_of, horizon_days, metric
