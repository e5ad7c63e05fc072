-- One record per money movement (the lean ledger layout issue): an entry's row carries, besides
-- its item changes (0016), the facts of the purchase it books and the receipt signed for it. A
-- purchase wrote three more rows before (`purchase`, `receipt`, and their indexes: five B-trees);
-- it now writes one entry row.
--
-- `purchase` and `receipt` become views over the entries with the same columns, so what read
-- them (the audit, the export, the purchase limits) reads the records unchanged. A purchase's
-- and a receipt's time is their entry's (they were made in its transaction). Receipts are found
-- by id through a partial index on the entries that have one; purchases are never looked up by
-- id (analytics reads the entries by time, through their time-ordered ids).
alter table entry add column purchase_id text;
alter table entry add column purchase_offer text;
alter table entry add column purchase_sku text;
alter table entry add column purchase_quantity bigint constraint entry_purchase_quantity_check check (purchase_quantity > 0);
alter table entry add column purchase_price_index bigint;
alter table entry add column purchase_price_variant text;
alter table entry add column purchase_currency text;
alter table entry add column purchase_amount bigint constraint entry_purchase_amount_check check (purchase_amount > 0);
alter table entry add column purchase_catalog_version bigint;
alter table entry add column receipt_id text;
alter table entry add column receipt_key text constraint entry_receipt_key_fk references receipt_key (id);
alter table entry add column receipt_payload text;
alter table entry add column receipt_signature text;

-- An entry has at most one receipt: refuse to migrate (rather than drop one) if not.
create unique index receipt_one_per_entry on receipt (entry_id);
update entry set purchase_id = p.id, purchase_offer = p.offer_id, purchase_sku = p.sku,
    purchase_quantity = p.quantity, purchase_price_index = p.price_index,
    purchase_price_variant = p.price_variant, purchase_currency = p.currency,
    purchase_amount = p.amount, purchase_catalog_version = p.catalog_version
from purchase p where p.entry_id = entry.id;
update entry set receipt_id = r.id, receipt_key = r.key_id, receipt_payload = r.payload,
    receipt_signature = r.signature
from receipt r where r.entry_id = entry.id;
create unique index entry_receipt_idx on entry (receipt_id) where receipt_id is not null;

-- Tab items named their purchase by a foreign key to its table, which SQLite cannot drop: the
-- table is rebuilt without it (the audit checks every tab item's purchase instead).
create table tab_item_0017 (
    id text not null constraint tab_item_pk primary key,
    tab_id text not null constraint tab_item_tab_fk references tab (id),
    purchase_id text not null,
    sku text not null,
    quantity bigint not null,
    amount_micros bigint not null,
    created_at bigint not null
);
insert into tab_item_0017 (id, tab_id, purchase_id, sku, quantity, amount_micros, created_at)
select id, tab_id, purchase_id, sku, quantity, amount_micros, created_at from tab_item;
drop table tab_item;
alter table tab_item_0017 rename to tab_item;
create index tab_item_tab_idx on tab_item (tab_id);

drop table purchase;
drop table receipt;

create view purchase as
select purchase_id as id, player_id, purchase_offer as offer_id, purchase_sku as sku,
    purchase_quantity as quantity, purchase_price_index as price_index,
    purchase_currency as currency, purchase_amount as amount,
    purchase_catalog_version as catalog_version, id as entry_id, 'completed' as status,
    created_at, purchase_price_variant as price_variant
from entry where purchase_id is not null;

create view receipt as
select receipt_id as id, player_id, id as entry_id, receipt_key as key_id,
    receipt_payload as payload, receipt_signature as signature, created_at
from entry where receipt_id is not null;
