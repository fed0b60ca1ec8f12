-- Empty the four source relations (spendpred seed, replace mode), inside the caller's transaction.
TRUNCATE users, orders, events, reviews;
