-- Store views: which offers a player was shown, at which price, for price-sensitivity analytics.
create table store_view (
    id integer not null constraint store_view_pk primary key autoincrement,
    player_id text not null constraint store_view_player_fk references player (id),
    offer_id text not null,
    sku text not null,
    price_variant text,
    price_point text not null,
    created_at bigint not null
);
create index store_view_created_idx on store_view (created_at);
create index purchase_created_idx on purchase (created_at);
create index payment_order_created_idx on payment_order (created_at);
