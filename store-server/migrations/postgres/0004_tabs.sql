-- Tabs: a player's running balance of real-money micro-charges, settled as one card charge.
-- Amounts are bigint micros of the tab's ISO currency.

create table tab (
    id text not null constraint tab_pk primary key,
    player_id text not null constraint tab_player_fk references player (id),
    currency text not null,
    status text not null constraint tab_status_check check (status in ('open', 'settling', 'settled')),
    -- What the player owes on this tab: the remainder carried in plus every item charged.
    amount_micros bigint not null default 0 constraint tab_amount_check check (amount_micros >= 0),
    carried_in_micros bigint not null default 0,
    item_count bigint not null default 0,
    opened_at bigint not null,
    settle_order_id text,
    charged_micros bigint,
    carried_out_micros bigint,
    settled_at bigint
);
-- At most one tab a player can still add to or is settling, per currency.
create unique index tab_current_unique on tab (player_id, currency) where status in ('open', 'settling');
create index tab_status_idx on tab (status, opened_at);

create table tab_item (
    id text not null constraint tab_item_pk primary key,
    tab_id text not null constraint tab_item_tab_fk references tab (id),
    purchase_id text not null constraint tab_item_purchase_fk references purchase (id),
    sku text not null,
    quantity bigint not null,
    amount_micros bigint not null,
    created_at bigint not null
);
create index tab_item_tab_idx on tab_item (tab_id);

alter table payment_order add column tab_id text;
