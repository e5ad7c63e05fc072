-- Privacy: an erased player keeps their ledger under their random id; their personal fields
-- (device id, country) are gone and erased_at says when.
alter table player add column erased_at bigint;
