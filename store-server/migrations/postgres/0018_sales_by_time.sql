-- Sales analytics read a range of purchases by time: since migration 0017 they are entries, so
-- the purchases' time index (`purchase_created_idx`, dropped with the table) comes back on the
-- entries that record one. Entries are made in time order, so a purchase adds to its rightmost
-- leaf only.
create index entry_sale_time_idx on entry (created_at) where purchase_id is not null;
