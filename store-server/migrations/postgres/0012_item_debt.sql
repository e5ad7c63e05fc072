-- Items a player used up become a debt when their purchase is reversed (DESIGN 5.5).
--
-- A clawback takes back every item the reversal covers; what the player no longer holds leaves
-- the count below zero, flagged `in_debt` like a wallet, and the next grants of the item repay
-- it. Only a recorded clawback may take a count below zero.
alter table inventory
    drop constraint inventory_quantity_check,
    -- Set only by a recorded clawback; until then an item count never goes below zero.
    add column in_debt bigint not null default 0,
    add constraint inventory_non_negative_check check (quantity >= 0 or in_debt = 1);
