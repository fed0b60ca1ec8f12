-- The two most recent as_of dates of user_spend_scores (NULL when missing); both
-- subqueries are answered from the primary key index.
SELECT
    (SELECT MAX(as_of) FROM user_spend_scores) AS latest,
    (SELECT MAX(as_of) FROM user_spend_scores
      WHERE as_of < (SELECT MAX(as_of) FROM user_spend_scores)) AS previous
