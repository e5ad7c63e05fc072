-- Real money reconciles with the provider.
--
-- provider_payment: every payment a provider confirms, once per (provider, payment id). A
-- payment that pays its order exactly (amount, currency, reference, an order still waiting for
-- it) is applied; any other is booked as money received and returned by a refund of its own.
create table provider_payment (
    provider text not null,
    payment_id text not null,
    order_id text not null constraint provider_payment_order_fk references payment_order (id),
    currency text not null,
    amount_micros bigint not null constraint provider_payment_amount_check check (amount_micros > 0),
    fee_micros bigint not null constraint provider_payment_fee_check check (fee_micros >= 0),
    outcome text not null constraint provider_payment_outcome_check check (outcome in ('applied', 'returned')),
    reason text,
    entry_id text constraint provider_payment_entry_fk references entry (id),
    created_at bigint not null,
    constraint provider_payment_pk primary key (provider, payment_id)
);
create index provider_payment_order_idx on provider_payment (order_id);

-- A refund returns the order's payment, or (payment_id set) a payment that did not pay for it.
-- Submission backs off per refund (attempts, next_attempt_at); a refusal is `failed` with its
-- last_error, for an operator to see.
alter table refund add column payment_id text;
alter table refund add column attempts bigint not null default 0;
alter table refund add column next_attempt_at bigint not null default 0;
alter table refund add column last_error text;
create index refund_due_idx on refund (status, next_attempt_at);

-- Real-money requests claim their key before calling the provider: the claim names the order
-- the request opens, so a retry reuses its id (and the provider session's reference).
alter table idempotency add column resource_id text;

-- Payments applied before this migration, so a replay of one is recognized as booked.
insert into provider_payment (provider, payment_id, order_id, currency, amount_micros, fee_micros, outcome, entry_id, created_at)
select provider, provider_payment, id, currency, gross_micros, coalesce(fee_micros, 0), 'applied', entry_id, updated_at
from payment_order where provider_payment is not null;

-- Refunds and chargebacks that overlap: each movement the provider confirms is booked; what
-- went back beyond the order's price is kept here and the order is marked for review.
alter table payment_order add column over_reversed_micros bigint not null default 0;
alter table payment_order add column review_reason text;

-- Orders reserve stock when created; a failed, expired or canceled order gives it back.
alter table payment_order add column stock_taken bigint not null default 0;
