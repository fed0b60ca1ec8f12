-- The latest night up to the bound as_of whose monitoring requested a retrain (the cool-down's start).
SELECT MAX(as_of) AS last_requested FROM retrain_requests WHERE decision = 'requested' AND as_of <= :as_of
