-- Foundation: installation metadata, operator keys, players and sessions, currencies, the
-- catalog draft and its published versions, and the operator audit log.
-- Times are bigint microseconds since the Unix epoch; counts and amounts are bigint.

create table meta (
    key text not null constraint meta_pk primary key,
    value text not null
);

create table api_key (
    id text not null constraint api_key_pk primary key,
    name text not null,
    prefix text not null,
    secret_hash text not null constraint api_key_secret_hash_unique unique,
    scopes text not null,
    created_at bigint not null,
    revoked_at bigint
);

create table player (
    id text not null constraint player_pk primary key,
    device_id text not null constraint player_device_id_unique unique,
    country text,
    created_at bigint not null
);

create table session (
    id text not null constraint session_pk primary key,
    player_id text not null constraint session_player_fk references player (id),
    created_at bigint not null,
    expires_at bigint not null,
    revoked_at bigint
);
create index session_player_idx on session (player_id);

create table currency (
    code text not null constraint currency_pk primary key,
    name text not null,
    kind text not null constraint currency_kind_check check (kind in ('soft', 'hard')),
    initial_grant bigint not null constraint currency_initial_grant_check check (initial_grant >= 0),
    balance_max bigint not null
        constraint currency_balance_max_check check (balance_max between 1 and 9007199254740992),
    created_at bigint not null,
    updated_at bigint not null,
    constraint currency_initial_grant_within_max_check check (initial_grant <= balance_max)
);

-- The draft: one canonical JSON document per item and offer, plus the item-to-item grant edges
-- so references can be checked without reading every document.
create table draft_item (
    sku text not null constraint draft_item_pk primary key,
    body text not null
);

create table draft_item_grant (
    sku text not null constraint draft_item_grant_item_fk references draft_item (sku) on delete cascade,
    granted_sku text not null constraint draft_item_grant_granted_fk references draft_item (sku),
    constraint draft_item_grant_pk primary key (sku, granted_sku)
);
create index draft_item_grant_granted_idx on draft_item_grant (granted_sku);

create table draft_offer (
    id text not null constraint draft_offer_pk primary key,
    sku text not null constraint draft_offer_item_fk references draft_item (sku),
    body text not null
);
create index draft_offer_sku_idx on draft_offer (sku);

-- Published versions are immutable: rows are inserted, never updated.
create table catalog_version (
    version bigint not null constraint catalog_version_pk primary key,
    body text not null,
    item_count bigint not null,
    offer_count bigint not null,
    published_at bigint not null,
    published_by text
);

create table audit_log (
    id text not null constraint audit_log_pk primary key,
    actor text not null,
    action text not null,
    target text not null,
    before_value text,
    after_value text,
    created_at bigint not null
);
