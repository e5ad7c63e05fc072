-- The price experiment variant a purchase or order was priced in, for price-sensitivity analytics.
alter table purchase add column price_variant text;
alter table payment_order add column price_variant text;
