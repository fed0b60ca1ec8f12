-- Refresh the planner statistics after a bulk load of the source relations.
ANALYZE users, orders, events, reviews;
