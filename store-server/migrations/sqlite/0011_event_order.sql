-- The event stream reads in commit order, not id order (see the PostgreSQL migration). SQLite
-- has one writer at a time, so its id order is its commit order: every event's transaction
-- column is 0 and the stream's order is the id's.
alter table player_event add column tx_id integer not null default 0;
create index player_event_stream_idx on player_event (player_id, tx_id, id);
drop index player_event_player_idx;
