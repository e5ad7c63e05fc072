-- Real-money orders, their transitions, refunds and chargebacks, webhook deduplication, the
-- players' event outbox (for /v1/events), and the sandbox payment provider's own tables.
-- Real-money amounts are bigint micros (1 unit = 1,000,000).

create table payment_order (
    id text not null constraint payment_order_pk primary key,
    player_id text not null constraint payment_order_player_fk references player (id),
    offer_id text not null,
    sku text not null,
    quantity bigint not null constraint payment_order_quantity_check check (quantity > 0),
    price_index bigint not null,
    currency text not null,
    gross_micros bigint not null constraint payment_order_gross_check check (gross_micros > 0),
    fee_micros bigint,
    net_micros bigint,
    refunded_micros bigint not null default 0,
    status text not null constraint payment_order_status_check check (status in (
        'requires_payment', 'processing', 'paid', 'fulfilled', 'failed', 'expired', 'canceled',
        'refunded', 'partially_refunded', 'disputed', 'charged_back')),
    provider text not null,
    provider_session text not null,
    provider_payment text,
    checkout_url text not null,
    catalog_version bigint not null,
    entry_id text constraint payment_order_entry_fk references entry (id),
    failure_reason text,
    expires_at bigint not null,
    created_at bigint not null,
    updated_at bigint not null,
    constraint payment_order_session_unique unique (provider, provider_session),
    constraint payment_order_refunded_check check (refunded_micros between 0 and gross_micros)
);
create index payment_order_player_idx on payment_order (player_id, id);
create index payment_order_expiry_idx on payment_order (status, expires_at);
create index payment_order_spending_idx on payment_order (player_id, currency, created_at);

create table order_transition (
    id bigint generated always as identity constraint order_transition_pk primary key,
    order_id text not null constraint order_transition_order_fk references payment_order (id),
    from_status text not null,
    to_status text not null,
    cause text not null,
    created_at bigint not null
);
create index order_transition_order_idx on order_transition (order_id, id);

create table refund (
    id text not null constraint refund_pk primary key,
    order_id text not null constraint refund_order_fk references payment_order (id),
    kind text not null constraint refund_kind_check check (kind in ('refund', 'chargeback')),
    amount_micros bigint not null constraint refund_amount_check check (amount_micros > 0),
    reason text not null,
    actor text not null,
    status text not null constraint refund_status_check check (status in ('pending', 'submitted', 'succeeded', 'failed')),
    provider_refund text,
    entry_id text constraint refund_entry_fk references entry (id),
    created_at bigint not null,
    updated_at bigint not null
);
create index refund_order_idx on refund (order_id);
create index refund_status_idx on refund (status);

create table webhook_event (
    provider text not null,
    event_id text not null,
    event_type text not null,
    received_at bigint not null,
    constraint webhook_event_pk primary key (provider, event_id)
);

create table player_event (
    id bigint generated always as identity constraint player_event_pk primary key,
    player_id text not null,
    event_type text not null,
    data text not null,
    created_at bigint not null
);
create index player_event_player_idx on player_event (player_id, id);

-- The sandbox payment provider. It shares the database when mounted in the store server, but
-- talks to the store only over HTTP.
create table sandbox_session (
    id text not null constraint sandbox_session_pk primary key,
    idempotency_key text not null constraint sandbox_session_idempotency_unique unique,
    merchant text not null,
    reference text not null,
    description text not null,
    currency text not null,
    amount_micros bigint not null,
    status text not null constraint sandbox_session_status_check check (status in ('open', 'paid', 'failed', 'expired')),
    payment_id text,
    expires_at bigint not null,
    created_at bigint not null
);

create table sandbox_payment (
    id text not null constraint sandbox_payment_pk primary key,
    session_id text not null constraint sandbox_payment_session_fk references sandbox_session (id),
    card_last4 text not null,
    currency text not null,
    amount_micros bigint not null,
    fee_micros bigint not null,
    refunded_micros bigint not null default 0,
    status text not null,
    created_at bigint not null
);

create table sandbox_refund (
    id text not null constraint sandbox_refund_pk primary key,
    payment_id text not null constraint sandbox_refund_payment_fk references sandbox_payment (id),
    idempotency_key text not null constraint sandbox_refund_idempotency_unique unique,
    amount_micros bigint not null,
    created_at bigint not null
);

create table sandbox_event (
    id text not null constraint sandbox_event_pk primary key,
    event_type text not null,
    payload text not null,
    created_at bigint not null
);

create table sandbox_delivery (
    id bigint generated always as identity constraint sandbox_delivery_pk primary key,
    event_id text not null constraint sandbox_delivery_event_fk references sandbox_event (id),
    due_at bigint not null,
    attempts bigint not null default 0,
    delivered_at bigint,
    last_error text
);
create index sandbox_delivery_due_idx on sandbox_delivery (delivered_at, due_at);
