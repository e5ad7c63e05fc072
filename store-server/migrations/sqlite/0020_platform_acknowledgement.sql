-- A Google Play purchase must be acknowledged (or consumed) within three days, or Google refunds
-- it. A redemption writes the work here in the transaction that grants it; the request tries it
-- at once and the order workers retry until Google confirms, so a grant never outlives its
-- purchase by an acknowledgement lost to an outage.
create table platform_acknowledgement (
    order_id text primary key references payment_order (id),
    provider text not null,
    product_id text not null,
    purchase_token text not null,
    -- `consume` (a consumable: the player can buy it again) or `acknowledge` (a durable item).
    action text not null,
    attempts integer not null default 0,
    next_attempt_at bigint not null,
    done_at bigint,
    last_error text
);
create index platform_acknowledgement_due_idx on platform_acknowledgement (next_attempt_at) where done_at is null;
