-- The ledger: accounts with stored balances, immutable entries, postings that record the
-- balance after them; inventory and its changes; purchases, rewards, receipts and idempotency.

alter table player add column blocked bigint not null default 0;
alter table player add column minor bigint not null default 0;
alter table player add column trusted bigint not null default 0;
-- Bumped by every money-moving transaction of the player: the row lock that serializes them.
alter table player add column lock_version bigint not null default 0;

-- Wallets are `w:<player>:<currency>`; system accounts `s:<kind>:<currency>`. A wallet holds a
-- virtual currency; system accounts hold a virtual currency or, for real money, an ISO 4217 code
-- (amounts in micros).
create table account (
    id text not null constraint account_pk primary key,
    kind text not null constraint account_kind_check
        check (kind in ('wallet', 'issuance', 'revenue', 'adjustment', 'clearing', 'fees', 'tab_receivable', 'creator_payable', 'payouts')),
    player_id text constraint account_player_fk references player (id),
    currency text not null,
    balance bigint not null default 0,
    -- Set only by a recorded clawback; until then a wallet never goes below zero.
    in_debt bigint not null default 0,
    created_at bigint not null,
    constraint account_wallet_non_negative_check check (kind <> 'wallet' or balance >= 0 or in_debt = 1),
    constraint account_wallet_has_player_check check ((kind = 'wallet') = (player_id is not null))
);
create index account_player_idx on account (player_id);

create table entry (
    id text not null constraint entry_pk primary key,
    kind text not null,
    player_id text constraint entry_player_fk references player (id),
    actor text not null,
    reason text,
    created_at bigint not null
);
create index entry_player_idx on entry (player_id, id);

create table posting (
    id bigint generated always as identity constraint posting_pk primary key,
    entry_id text not null constraint posting_entry_fk references entry (id),
    account_id text not null constraint posting_account_fk references account (id),
    currency text not null,
    amount bigint not null constraint posting_amount_check check (amount <> 0),
    balance_after bigint not null
);
create index posting_entry_idx on posting (entry_id);
create index posting_account_idx on posting (account_id, id);

create table inventory (
    player_id text not null constraint inventory_player_fk references player (id),
    sku text not null,
    quantity bigint not null constraint inventory_quantity_check check (quantity >= 0),
    constraint inventory_pk primary key (player_id, sku)
);

create table inventory_change (
    id bigint generated always as identity constraint inventory_change_pk primary key,
    entry_id text not null constraint inventory_change_entry_fk references entry (id),
    player_id text not null,
    sku text not null,
    delta bigint not null constraint inventory_change_delta_check check (delta <> 0),
    quantity_after bigint not null
);
create index inventory_change_entry_idx on inventory_change (entry_id);
create index inventory_change_player_idx on inventory_change (player_id, sku);

create table purchase (
    id text not null constraint purchase_pk primary key,
    player_id text not null constraint purchase_player_fk references player (id),
    offer_id text not null,
    sku text not null,
    quantity bigint not null constraint purchase_quantity_check check (quantity > 0),
    price_index bigint not null,
    currency text not null,
    amount bigint not null constraint purchase_amount_check check (amount > 0),
    catalog_version bigint not null,
    entry_id text not null constraint purchase_entry_unique unique constraint purchase_entry_fk references entry (id),
    status text not null default 'completed',
    created_at bigint not null
);
create index purchase_limit_idx on purchase (player_id, sku, created_at);

-- Units sold of items with a stock; the stock itself is in the live catalog.
create table item_sold (
    sku text not null constraint item_sold_pk primary key,
    sold bigint not null constraint item_sold_check check (sold >= 0)
);

create table reward_rule (
    code text not null constraint reward_rule_pk primary key,
    currency text not null constraint reward_rule_currency_fk references currency (code),
    amount bigint not null constraint reward_rule_amount_check check (amount > 0),
    cap_per_minute bigint,
    cap_per_hour bigint,
    cap_per_day bigint,
    created_at bigint not null,
    updated_at bigint not null
);

create table reward_claim (
    id text not null constraint reward_claim_pk primary key,
    player_id text not null constraint reward_claim_player_fk references player (id),
    rule text not null,
    amount bigint not null,
    entry_id text not null constraint reward_claim_entry_fk references entry (id),
    created_at bigint not null
);
create index reward_claim_window_idx on reward_claim (player_id, rule, created_at);

create table receipt_key (
    id text not null constraint receipt_key_pk primary key,
    public_key text not null,
    secret_key text not null,
    created_at bigint not null,
    retired_at bigint
);

create table receipt (
    id text not null constraint receipt_pk primary key,
    player_id text not null constraint receipt_player_fk references player (id),
    entry_id text not null constraint receipt_entry_fk references entry (id),
    key_id text not null constraint receipt_key_fk references receipt_key (id),
    payload text not null,
    signature text not null,
    created_at bigint not null
);
create index receipt_player_idx on receipt (player_id);

-- The first response to each idempotency key, per caller, replayed byte for byte.
create table idempotency (
    scope text not null,
    key text not null,
    request_hash text not null,
    status_code bigint not null,
    response_body text not null,
    created_at bigint not null,
    constraint idempotency_pk primary key (scope, key)
);
create index idempotency_created_idx on idempotency (created_at);
