-- The warehouse before spendpred.synth.append_day adds one day: how many users it holds, the
-- newest timestamp of each source relation (append_day refuses a day that is not after all of
-- them) and the signups of the 28 days before the day (its default number of new users).
-- Portable: the same SQL runs on SQLite and PostgreSQL.
SELECT
    (SELECT COUNT(*) FROM users) AS users_count,
    (SELECT MAX(signup_at) FROM users) AS users_max,
    (SELECT MAX(ordered_at) FROM orders) AS orders_max,
    (SELECT MAX(occurred_at) FROM events) AS events_max,
    (SELECT MAX(created_at) FROM reviews) AS reviews_max,
    (SELECT COUNT(*) FROM users WHERE signup_at >= :start_28d AND signup_at < :day_start) AS recent_signups
