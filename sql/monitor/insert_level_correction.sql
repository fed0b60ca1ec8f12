INSERT INTO level_corrections (as_of, model_version, factor, unclipped_factor, based_on_as_of, created_at)
VALUES (:as_of, :model_version, :factor, :unclipped_factor, :based_on_as_of, :created_at)
