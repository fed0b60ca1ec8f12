INSERT INTO partition_metrics (as_of, model_version, scorer, metric, value, ci_low, ci_high, evaluated_at, horizon_days)
VALUES (:as_of, :model_version, :scorer, :metric, :value, :ci_low, :ci_high, :evaluated_at, :horizon_days)
