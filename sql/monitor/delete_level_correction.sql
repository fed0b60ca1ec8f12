-- Remove one night's level correction (replaced in the same transaction).
DELETE FROM level_corrections WHERE as_of = :as_of
