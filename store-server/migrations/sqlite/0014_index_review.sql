-- Indexes reviewed against the queries that read them (the lean ledger layout issue). Every
-- per-player index costs a purchase one more page in a B-tree keyed by player; the ones no query
-- needs go, and the one a query lacked is added.
--
-- - A receipt is looked up by its entry (an order's or a purchase's receipt): that index was
--   missing. By player, receipts are read only by the privacy export, which joins the
--   player's entries.
-- - Item changes are read by entry (history pages join the player's entries; the audit and the
--   export scan): none by player.
-- - Purchases are counted against an item's purchase limit through the player's entries in the
--   limit's period (entry ids are time-ordered, `ledger::entry_id_floor`); by player and item,
--   nothing else reads them.
-- - Reward claims are counted against a rule's caps the same way, through the player's entries
--   of the day, and found by their entry.
-- - Postings are read by account only for system and creator accounts (revenue shares, the
--   audit); a wallet's postings are read through its player's entries.
drop index receipt_player_idx;
create index receipt_entry_idx on receipt (entry_id);
drop index inventory_change_player_idx;
drop index purchase_limit_idx;
drop index reward_claim_window_idx;
create index reward_claim_entry_idx on reward_claim (entry_id);
drop index posting_account_idx;
create index posting_account_idx on posting (account_id, id) where account_id not like 'w:%';
