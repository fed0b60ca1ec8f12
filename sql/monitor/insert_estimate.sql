INSERT INTO estimated_metrics (as_of, model_version, horizon_days, metric, value, users, computed_at)
VALUES (:as_of, :model_version, :horizon_days, :metric, :value, :users, :computed_at)
