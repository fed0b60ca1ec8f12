-- One tier's score interval [lower_bound, upper_bound) for the run; NULL is an open end.
INSERT INTO tier_thresholds (as_of, tier, lower_bound, upper_bound, model_version)
VALUES (:as_of, :tier, :lower_bound, :upper_bound, :model_version)
