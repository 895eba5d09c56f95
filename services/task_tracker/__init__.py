"""The task tracker: folds task submits, worker updates and cancels into Iaso-style task records,
stores them (SQLite or PostgreSQL) and drives stalled tasks again."""
