INSERT INTO retrain_requests (as_of, model_version, decision, reasons, cooldown_until, decided_at)
VALUES (:as_of, :model_version, :decision, :reasons, :cooldown_until, :decided_at)
