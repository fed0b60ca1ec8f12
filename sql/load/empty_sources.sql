-- Empty the four source relations (spendpred seed, replace mode), inside the caller's transaction.
DELETE FROM users;
DELETE FROM orders;
DELETE FROM events;
DELETE FROM reviews;
