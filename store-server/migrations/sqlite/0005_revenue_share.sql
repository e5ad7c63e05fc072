-- Creator payouts: each batch of a creator's payable balance paid out, with its ledger entry.
create table creator_payout (
    id text not null constraint creator_payout_pk primary key,
    creator text not null,
    currency text not null,
    amount_micros bigint not null constraint creator_payout_amount_check check (amount_micros > 0),
    entry_id text not null constraint creator_payout_entry_fk references entry (id),
    actor text not null,
    created_at bigint not null
);
create index creator_payout_creator_idx on creator_payout (creator, id);
