-- Items a player used up become a debt when their purchase is reversed (DESIGN 5.5).
--
-- A clawback takes back every item the reversal covers; what the player no longer holds leaves
-- the count below zero, flagged `in_debt` like a wallet, and the next grants of the item repay
-- it. Only a recorded clawback may take a count below zero. SQLite cannot change a table's
-- constraints, so the table is rebuilt with the same rows.
create table inventory_next (
    player_id text not null constraint inventory_player_fk references player (id),
    sku text not null,
    quantity bigint not null,
    -- Set only by a recorded clawback; until then an item count never goes below zero.
    in_debt bigint not null default 0,
    constraint inventory_non_negative_check check (quantity >= 0 or in_debt = 1),
    constraint inventory_pk primary key (player_id, sku)
);
insert into inventory_next (player_id, sku, quantity) select player_id, sku, quantity from inventory;
drop table inventory;
alter table inventory_next rename to inventory;
