-- One record per money movement, first part (the lean ledger layout issue): an entry carries its
-- item changes in its own row, `items`, a JSON array of [sku, delta, quantity after] in sku
-- order (null when it changed no item), instead of one `inventory_change` row each in a table
-- of its own with its own index. History pages, the event stream, the audit and the export read
-- them from the entry.
alter table entry add column items text;
update entry e set items = (
    select json_agg(json_build_array(c.sku, c.delta, c.quantity_after) order by c.id)::text
    from inventory_change c where c.entry_id = e.id
) where e.id in (select entry_id from inventory_change);
drop table inventory_change;
