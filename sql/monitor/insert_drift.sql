INSERT INTO drift_metrics (as_of, model_version, feature, psi, statistic, status, computed_at)
VALUES (:as_of, :model_version, :feature, :psi, :statistic, :status, :computed_at)
