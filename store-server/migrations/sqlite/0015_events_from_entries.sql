-- The event stream reads a player's wallet and inventory events from the player's entries (the
-- lean ledger layout issue): a purchase no longer writes a `player_event` row per event, only
-- changes other than entries' (orders, tabs) do.
--
-- Until now every entry's events were rows. Per player, the newest entry at this migration is
-- kept: the stream reads that player's entries only after it (the older ones are announced by
-- their rows, with the ids streams have already seen), and the ids of new entries are always
-- after their player's newest (`ledger::events::EntryHeads`).
create table ledger_event_start (
    player_id text not null constraint ledger_event_start_pk primary key
        constraint ledger_event_start_player_fk references player (id),
    entry_id text not null
);
insert into ledger_event_start (player_id, entry_id)
select player_id, max(id) from entry where player_id is not null group by player_id;
