-- Sessions are purged a day after they expire (an expired token is refused before its row is
-- read), so device logins cannot grow the table without bound.
create index session_expires_idx on session (expires_at);
