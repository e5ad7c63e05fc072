-- The event stream reads in commit order, not id order.
--
-- An identity id is taken when a row is inserted, not when its transaction commits, so two
-- writers (the batch writer, a sweeper, another instance) can commit ids out of order, and a
-- stream that resumes with `id > last` skips the slower one's event. Each event now records
-- its transaction's 64-bit id; a stream reads only events whose transaction is older than
-- every transaction still running (`pg_snapshot_xmin`), in (transaction, id) order, so no
-- event can appear behind the stream's cursor. Existing rows get this migration's
-- transaction id: they keep their id order.
alter table player_event
    add column tx_id bigint not null default (pg_current_xact_id()::text::bigint);
create index player_event_stream_idx on player_event (player_id, tx_id, id);
drop index player_event_player_idx;
