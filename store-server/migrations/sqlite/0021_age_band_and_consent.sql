-- A player's `minor` flag (0 or 1) becomes the age band an operator sets: 0 adult, 1 minor
-- (13 to 17), 2 child (under 13). A player flagged minor stays in the minor band.
alter table player rename column minor to age_band;

-- Whether the buyer consented to immediate delivery of an order (the EU withdrawal waiver for
-- digital content): 1 when they did; the order's receipt says so.
alter table payment_order add column delivery_consent bigint not null default 0;
