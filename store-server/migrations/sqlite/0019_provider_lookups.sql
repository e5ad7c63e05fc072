-- Real payment rails name payments and refunds by the provider's ids: a dispute or a refund
-- made in the provider's dashboard finds its order by the payment, and a refund event finds
-- the refund it books by the provider's refund id.
create index payment_order_payment_idx on payment_order (provider, provider_payment) where provider_payment is not null;
create index refund_provider_idx on refund (provider_refund) where provider_refund is not null;
