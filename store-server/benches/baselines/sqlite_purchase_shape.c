// The database's own cost for a Coinslot purchase's rows, with no driver: SQLite's C API and
// prepared statements, the schema of the SQLite migrations (ledger tables and their indexes as of
// migration 0017; keep them in step; since 0015 a purchase writes no event row, since 0016 no
// item change row, since 0017 no purchase or receipt row: the entry carries its item changes,
// its purchase and its receipt), WAL with
// synchronous=FULL. benches/purchases.rs builds it with the system C compiler and libsqlite3
// and runs it as the SQLite baselines: nothing of this project's code or driver stack is on its
// path. Origin: the write-path analysis (../shared/perf/write-path.md, section 2.4).
//
// ./sqlite_purchase_shape MODE PER_COMMIT TOTAL [wal|-] [hot]
//
// Micro-benchmark: a Coinslot purchase's write shape on SQLite (WAL, synchronous=FULL, FKs on),
// (A) row-at-a-time with prepared statements (11 statements per purchase, like the per-request path),
// (B) set-oriented: ~5 reads + ~8 multi-row writes per batch, like the set path,
// (C) the 4-statement shape (2 updates + 2 inserts) for calibration against the sqlite3-shell figure.
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static sqlite3 *db;
static void ck(int rc, const char *what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    fprintf(stderr, "%s: %s (%d)\n", what, sqlite3_errmsg(db), rc);
    exit(1);
  }
}
static void exec(const char *sql) {
  char *err = 0;
  if (sqlite3_exec(db, sql, 0, 0, &err) != SQLITE_OK) { fprintf(stderr, "%s: %s\n", sql, err); exit(1); }
}
static sqlite3_stmt *prep(const char *sql) {
  sqlite3_stmt *s; ck(sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, 0), sql); return s;
}
static int wal_frames = 0;
static int on_wal(void *u, sqlite3 *d, const char *name, int frames) { (void)u; (void)d; (void)name; wal_frames = frames; return SQLITE_OK; }
// Every frame written to the WAL, counted after each commit: the WAL grows until a checkpoint,
// then the next commit starts it again from its first frame. Checkpoints as `wal_autocheckpoint`
// (which this hook replaces) would.
static long long wal_written = 0;
static int wal_seen = 0;
static int on_commit_wal(void *u, sqlite3 *d, const char *name, int frames) {
  (void)u;
  wal_written += frames >= wal_seen ? frames - wal_seen : frames;
  wal_seen = frames;
  if (frames >= 4096) sqlite3_wal_checkpoint_v2(d, name, SQLITE_CHECKPOINT_PASSIVE, 0, 0);
  return SQLITE_OK;
}
// Rows in every table.
static long long rows_held(void) {
  sqlite3_stmt *t; long long rows = 0;
  ck(sqlite3_prepare_v2(db, "select name from sqlite_master where type = 'table' and name not like 'sqlite%'", -1, &t, 0), "tables");
  while (sqlite3_step(t) == SQLITE_ROW) {
    char q[200]; sqlite3_stmt *c; snprintf(q, sizeof q, "select count(*) from \"%s\"", (const char *)sqlite3_column_text(t, 0));
    ck(sqlite3_prepare_v2(db, q, -1, &c, 0), q); ck(sqlite3_step(c), q); rows += sqlite3_column_int64(c, 0); sqlite3_finalize(c);
  }
  sqlite3_finalize(t); return rows;
}
// Bytes this process has written to storage (WAL, and the checkpoints that copy it back): the
// figure the server's benchmark reads from the server's own /proc/<pid>/io.
static long long io_written(void) {
  FILE *f = fopen("/proc/self/io", "r"); char line[128]; long long bytes = 0;
  if (!f) return 0;
  while (fgets(line, sizeof line, f)) if (!strncmp(line, "write_bytes:", 12)) bytes = atoll(line + 12);
  fclose(f); return bytes;
}
static double now(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void step_done(sqlite3_stmt *s, const char *w) { int rc; while ((rc = sqlite3_step(s)) == SQLITE_ROW) {} ck(rc, w); sqlite3_reset(s); }

// The server's benchmark spreads its purchases over 1,000 wallets: so does this one, so a batch's
// players are as far apart in the per-player B-trees.
#define PLAYERS 1000
static int hot = 0;
#define PIDX(x) (hot ? 0 : (x) % PLAYERS)
static char player[PLAYERS][40];
static unsigned long long seq = 0;
static void uuid(char *out) { // unique, uuid-shaped, time-ordered enough
  unsigned long long v = ++seq; unsigned long long r = (unsigned long long)rand() * 2654435761ULL;
  sprintf(out, "019b%04llx-%04llx-7%03llx-8%03llx-%012llx", (v >> 32) & 0xffff, (v >> 16) & 0xffff, v & 0xfff, r & 0xfff, (v * 11400714819323198485ULL) & 0xffffffffffffULL);
}

static const char *SCHEMA =
"create table meta (key text not null primary key, value text not null);"
"create table player (id text not null primary key, device_id text not null unique, country text, created_at bigint not null,"
"  blocked bigint not null default 0, minor bigint not null default 0, trusted bigint not null default 0, lock_version bigint not null default 0,"
"  erased_at bigint, flagged_at bigint, flag_reason text);"
"create table account (id text not null primary key, kind text not null check (kind in ('wallet','issuance','revenue')),"
"  player_id text references player (id), currency text not null, balance bigint not null default 0, in_debt bigint not null default 0,"
"  created_at bigint not null, check (kind <> 'wallet' or balance >= 0 or in_debt = 1), check ((kind = 'wallet') = (player_id is not null)));"
"create index account_player_idx on account (player_id);"
"create table receipt_key (id text not null primary key, public_key text not null, secret_key text not null, created_at bigint not null, retired_at bigint);"
"create table entry (id text not null primary key, kind text not null, player_id text references player (id), actor text not null, reason text, created_at bigint not null, items text,"
"  purchase_id text, purchase_offer text, purchase_sku text, purchase_quantity bigint check (purchase_quantity > 0), purchase_price_index bigint, purchase_price_variant text,"
"  purchase_currency text, purchase_amount bigint check (purchase_amount > 0), purchase_catalog_version bigint,"
"  receipt_id text, receipt_key text references receipt_key (id), receipt_payload text, receipt_signature text);"
"create index entry_player_idx on entry (player_id, id);"
"create unique index entry_receipt_idx on entry (receipt_id) where receipt_id is not null;"
"create table posting (id integer not null primary key autoincrement, entry_id text not null references entry (id),"
"  account_id text not null references account (id), currency text not null, amount bigint not null check (amount <> 0), balance_after bigint not null);"
"create index posting_entry_idx on posting (entry_id);"
"create index posting_account_idx on posting (account_id, id) where account_id not like 'w:%';"
"create table inventory (player_id text not null references player (id), sku text not null, quantity bigint not null check (quantity >= 0), primary key (player_id, sku));"
"create table idempotency (scope text not null, key text not null, request_hash text not null, status_code bigint not null, response_body text not null,"
"  created_at bigint not null, primary key (scope, key));"
"create index idempotency_created_idx on idempotency (created_at);"
"create table player_event (id integer not null primary key autoincrement, player_id text not null, event_type text not null, data text not null, created_at bigint not null, tx_id integer not null default 0);"
"create index player_event_stream_idx on player_event (player_id, tx_id, id);";

static char payload[421], signature[89], answer[1401];
static long long T = 1764000000000000LL;

static void seed(void) {
  exec(SCHEMA);
  exec("begin");
  exec("insert into meta values ('catalog_stamp','s1')");
  exec("insert into receipt_key values ('rk_1','pub','sec',0,null)");
  exec("insert into account values ('s:revenue:gold','revenue',null,'gold',0,0,0)");
  sqlite3_stmt *p = prep("insert into player (id, device_id, country, created_at) values (?1, ?1, 'FR', 0)");
  sqlite3_stmt *a = prep("insert into account values ('w:' || ?1 || ':gold','wallet',?1,'gold',1000000000,0,0)");
  sqlite3_stmt *i = prep("insert into inventory values (?1, 'magnet', 1)");
  for (int k = 0; k < PLAYERS; k++) {
    uuid(player[k]);
    sqlite3_bind_text(p, 1, player[k], -1, SQLITE_STATIC); step_done(p, "player");
    sqlite3_bind_text(a, 1, player[k], -1, SQLITE_STATIC); step_done(a, "wallet");
    sqlite3_bind_text(i, 1, player[k], -1, SQLITE_STATIC); step_done(i, "inv");
  }
  exec("commit");
  sqlite3_finalize(p); sqlite3_finalize(a); sqlite3_finalize(i);
}

// ---------- (A) row at a time: the per-request path's statements ----------
static void mode_a(int batches, int per) {
  sqlite3_stmt *claim = prep("insert into idempotency (scope, key, request_hash, status_code, response_body, created_at) values (?1, ?2, 'h', 0, '', ?3) on conflict (scope, key) do nothing");
  sqlite3_stmt *lock = prep("update player set lock_version = lock_version + 1 where id = ?1 returning blocked, minor");
  sqlite3_stmt *entry = prep("insert into entry (id, kind, player_id, actor, reason, created_at, items, purchase_id, purchase_offer, purchase_sku, purchase_quantity, purchase_price_index,"
    " purchase_currency, purchase_amount, purchase_catalog_version, receipt_id, receipt_key, receipt_payload, receipt_signature)"
    " values (?1, 'purchase', ?2, ?3, null, ?4, ?5, ?6, 'offer', 'magnet', 1, 0, 'gold', 100, 1, ?7, 'rk_1', ?8, ?9)");
  sqlite3_stmt *bal = prep("update account set balance = balance + ?2 where id = ?1 and balance + ?2 >= 0 returning balance");
  sqlite3_stmt *post = prep("insert into posting (entry_id, account_id, currency, amount, balance_after) values (?1, ?2, 'gold', ?3, ?4)");
  sqlite3_stmt *inv = prep("insert into inventory (player_id, sku, quantity) values (?1, 'magnet', 1) on conflict (player_id, sku) do update set quantity = inventory.quantity + 1 returning quantity");
  sqlite3_stmt *head = prep("select (select max(e.id) from entry e where e.player_id = p.id) from player p where id in (select value from json_each(?1))");
  sqlite3_stmt *ans = prep("update idempotency set status_code = 201, response_body = ?3 where scope = ?1 and key = ?2");
  char e[40], pu[40], r[40], scope[64], key[64], wallet[64];
  for (int b = 0; b < batches; b++) {
    exec("begin immediate");
    for (int n = 0; n < per; n++) {
      const char *pl = player[PIDX(b * per + n)];
      uuid(e); uuid(pu); uuid(r);
      sprintf(scope, "player:%s", pl); sprintf(key, "a-%d-%d", b, n); sprintf(wallet, "w:%s:gold", pl);
      long long t = T++;
      sqlite3_bind_text(claim, 1, scope, -1, SQLITE_STATIC); sqlite3_bind_text(claim, 2, key, -1, SQLITE_STATIC); sqlite3_bind_int64(claim, 3, t); step_done(claim, "claim");
      sqlite3_bind_text(lock, 1, pl, -1, SQLITE_STATIC); step_done(lock, "lock");
      char one[64]; sprintf(one, "[\"%s\"]", pl); sqlite3_bind_text(head, 1, one, -1, SQLITE_TRANSIENT); step_done(head, "head");
      // Balances, then items, then the entry with its item changes, then the postings (as append_entry).
      const char *accts[2] = {"s:revenue:gold", wallet}; long long amts[2] = {100, -100}, afters[2];
      for (int k = 0; k < 2; k++) {
        sqlite3_bind_text(bal, 1, accts[k], -1, SQLITE_STATIC); sqlite3_bind_int64(bal, 2, amts[k]);
        ck(sqlite3_step(bal), "bal"); afters[k] = sqlite3_column_int64(bal, 0); step_done(bal, "bal2");
      }
      sqlite3_bind_text(inv, 1, pl, -1, SQLITE_STATIC); ck(sqlite3_step(inv), "inv"); long long q = sqlite3_column_int64(inv, 0); step_done(inv, "inv2");
      char items[64]; sprintf(items, "[[\"magnet\",1,%lld]]", q);
      sqlite3_bind_text(entry, 1, e, -1, SQLITE_STATIC); sqlite3_bind_text(entry, 2, pl, -1, SQLITE_STATIC); sqlite3_bind_text(entry, 3, scope, -1, SQLITE_STATIC); sqlite3_bind_int64(entry, 4, t); sqlite3_bind_text(entry, 5, items, -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(entry, 6, pu, -1, SQLITE_STATIC); sqlite3_bind_text(entry, 7, r, -1, SQLITE_STATIC); sqlite3_bind_text(entry, 8, payload, -1, SQLITE_STATIC); sqlite3_bind_text(entry, 9, signature, -1, SQLITE_STATIC); step_done(entry, "entry");
      for (int k = 0; k < 2; k++) {
        sqlite3_bind_text(post, 1, e, -1, SQLITE_STATIC); sqlite3_bind_text(post, 2, accts[k], -1, SQLITE_STATIC); sqlite3_bind_int64(post, 3, amts[k]); sqlite3_bind_int64(post, 4, afters[k]); step_done(post, "post");
      }
      sqlite3_bind_text(ans, 1, scope, -1, SQLITE_STATIC); sqlite3_bind_text(ans, 2, key, -1, SQLITE_STATIC); sqlite3_bind_text(ans, 3, answer, -1, SQLITE_STATIC); step_done(ans, "ans");
    }
    exec("commit");
  }
}

// ---------- (C) 4 statements: 2 updates + 2 inserts (calibration) ----------
static void mode_c(int batches, int per) {
  sqlite3_stmt *bal = prep("update account set balance = balance + ?2 where id = ?1 and balance + ?2 >= 0");
  sqlite3_stmt *post = prep("insert into posting (entry_id, account_id, currency, amount, balance_after) values (?1, ?2, 'gold', ?3, 0)");
  exec("insert into entry (id, kind, actor, created_at) values ('e0','purchase','x',0)");
  char wallet[64];
  for (int b = 0; b < batches; b++) {
    exec("begin immediate");
    for (int n = 0; n < per; n++) {
      sprintf(wallet, "w:%s:gold", player[PIDX(b * per + n)]);
      const char *accts[2] = {"s:revenue:gold", wallet}; long long amts[2] = {100, -100};
      for (int k = 0; k < 2; k++) { sqlite3_bind_text(bal, 1, accts[k], -1, SQLITE_STATIC); sqlite3_bind_int64(bal, 2, amts[k]); step_done(bal, "bal"); }
      for (int k = 0; k < 2; k++) { sqlite3_bind_text(post, 1, "e0", -1, SQLITE_STATIC); sqlite3_bind_text(post, 2, accts[k], -1, SQLITE_STATIC); sqlite3_bind_int64(post, 3, amts[k]); step_done(post, "post"); }
    }
    exec("commit");
  }
}

// ---------- (B) set-oriented: JSON-array parameters, fixed SQL texts ----------
typedef struct { char *p; size_t n, cap; } buf;
static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void put(buf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt); int w = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap); va_end(ap);
    if ((size_t)w < b->cap - b->n) { b->n += w; return; }
    b->cap = b->cap * 2 + w + 64; b->p = realloc(b->p, b->cap);
  }
}
static void reset(buf *b) { b->n = 0; if (!b->p) { b->cap = 1 << 16; b->p = malloc(b->cap); } b->p[0] = 0; }

static void mode_b(int batches, int per, int sign_us) {
  (void)sign_us;
  sqlite3_stmt *r_idem = prep("select i.scope, i.key, i.request_hash, i.status_code, i.response_body from json_each(?1) j join idempotency i on i.scope = j.value->>0 and i.key = j.value->>1");
  sqlite3_stmt *r_player = prep("select id, blocked, minor, country, (select max(e.id) from entry e where e.player_id = player.id) from player where id in (select value from json_each(?1))");
  sqlite3_stmt *r_acct = prep("select id, kind, balance from account where id in (select value from json_each(?1))");
  sqlite3_stmt *r_inv = prep("select i.player_id, i.sku, i.quantity from json_each(?1) j join inventory i on i.player_id = j.value->>0 and i.sku = j.value->>1");
  sqlite3_stmt *r_meta = prep("select (select value from meta where key = 'catalog_stamp'), (select id from receipt_key where retired_at is null order by created_at desc, id desc limit 1)");
  sqlite3_stmt *w_idem = prep("insert into idempotency (scope, key, request_hash, status_code, response_body, created_at) select value->>0, value->>1, value->>2, 201, value->>3, value->>4 from json_each(?1)");
  sqlite3_stmt *w_entry = prep("insert into entry (id, kind, player_id, actor, reason, created_at, items, purchase_id, purchase_offer, purchase_sku, purchase_quantity, purchase_price_index,"
    " purchase_currency, purchase_amount, purchase_catalog_version, receipt_id, receipt_key, receipt_payload, receipt_signature)"
    " select value->>0, 'purchase', value->>1, value->>2, null, value->>3, value->>4, value->>5, 'offer', 'magnet', 1, 0, 'gold', 100, 1, value->>6, 'rk_1', value->>7, value->>8 from json_each(?1)");
  sqlite3_stmt *w_acct = prep("update account set balance = balance + (j.value->>1) from json_each(?1) j where account.id = j.value->>0 and (account.kind <> 'wallet' or account.balance + (j.value->>1) >= 0) returning account.id, account.balance");
  sqlite3_stmt *w_post = prep("insert into posting (entry_id, account_id, currency, amount, balance_after) select value->>0, value->>1, 'gold', value->>2, value->>3 from json_each(?1)");
  sqlite3_stmt *w_inv = prep("update inventory set quantity = quantity + (j.value->>2) from json_each(?1) j where inventory.player_id = j.value->>0 and inventory.sku = j.value->>1 and inventory.quantity + (j.value->>2) >= 0 returning inventory.player_id, inventory.quantity");
  buf keys = {0}, pls = {0}, accts = {0}, invk = {0}, idem = {0}, ent = {0}, acu = {0}, post = {0}, inu = {0};
  char e[40], pu[40], r[40];
  static long long wal[PLAYERS], qty[PLAYERS]; long long rev; static int seen[PLAYERS]; int bk[128], nb;
  for (int b = 0; b < batches; b++) {
    reset(&keys); reset(&pls); reset(&accts); reset(&invk);
    put(&keys, "["); put(&pls, "["); put(&accts, "[\"s:revenue:gold\""); put(&invk, "[");
    memset(seen, 0, sizeof seen); nb = 0;
    for (int n = 0; n < per; n++) {
      int k = PIDX(b * per + n); const char *pl = player[k];
      if (!seen[k]) bk[nb++] = k;
      put(&keys, "%s[\"player:%s\",\"b-%d-%d\"]", n ? "," : "", pl, b, n);
      if (!seen[k]) { seen[k] = 1; put(&pls, "%s\"%s\"", pls.n > 1 ? "," : "", pl); put(&accts, ",\"w:%s:gold\"", pl); put(&invk, "%s[\"%s\",\"magnet\"]", invk.n > 1 ? "," : "", pl); }
    }
    put(&keys, "]"); put(&pls, "]"); put(&accts, "]"); put(&invk, "]");
    exec("begin immediate");
    // reads
    sqlite3_bind_text(r_idem, 1, keys.p, keys.n, SQLITE_STATIC); int found = 0; while (sqlite3_step(r_idem) == SQLITE_ROW) found++; sqlite3_reset(r_idem);
    if (found) { fprintf(stderr, "unexpected replay\n"); exit(1); }
    sqlite3_bind_text(r_player, 1, pls.p, pls.n, SQLITE_STATIC); while (sqlite3_step(r_player) == SQLITE_ROW) {} sqlite3_reset(r_player);
    sqlite3_bind_text(r_acct, 1, accts.p, accts.n, SQLITE_STATIC);
    while (sqlite3_step(r_acct) == SQLITE_ROW) {
      const char *id = (const char *)sqlite3_column_text(r_acct, 0); long long bl = sqlite3_column_int64(r_acct, 2);
      if (id[0] == 's') rev = bl; else for (int q = 0; q < nb; q++) if (!strncmp(id + 2, player[bk[q]], 36)) { wal[bk[q]] = bl; break; }
    }
    sqlite3_reset(r_acct);
    sqlite3_bind_text(r_inv, 1, invk.p, invk.n, SQLITE_STATIC);
    while (sqlite3_step(r_inv) == SQLITE_ROW) { const char *id = (const char *)sqlite3_column_text(r_inv, 0); for (int q = 0; q < nb; q++) if (!strncmp(id, player[bk[q]], 36)) { qty[bk[q]] = sqlite3_column_int64(r_inv, 2); break; } }
    sqlite3_reset(r_inv);
    step_done(r_meta, "meta");
    // validate + compute in memory, build the rows
    reset(&idem); reset(&ent); reset(&acu); reset(&post); reset(&inu);
    put(&idem, "["); put(&ent, "["); put(&post, "[");
    static long long delta[PLAYERS]; static int dq[PLAYERS]; long long revd = 0;
    memset(delta, 0, sizeof delta); memset(dq, 0, sizeof dq);
    for (int n = 0; n < per; n++) {
      int k = PIDX(b * per + n); const char *pl = player[k]; long long t = T++;
      if (wal[k] < 100) { continue; } // refusal: contributes nothing
      uuid(e); uuid(pu); uuid(r);
      wal[k] -= 100; rev += 100; delta[k] -= 100; revd += 100; qty[k] += 1; dq[k] += 1;
      const char *c = n ? "," : "";
      put(&idem, "%s[\"player:%s\",\"b-%d-%d\",\"h\",\"%s\",%lld]", c, pl, b, n, answer, t);
      put(&ent, "%s[\"%s\",\"%s\",\"player:%s\",%lld,\"[[\\\"magnet\\\",1,%lld]]\",\"%s\",\"%s\",\"%s\",\"%s\"]", c, e, pl, pl, t, qty[k], pu, r, payload, signature);
      put(&post, "%s[\"%s\",\"s:revenue:gold\",100,%lld],[\"%s\",\"w:%s:gold\",-100,%lld]", c, e, rev, e, pl, wal[k]);
    }
    put(&acu, "[[\"s:revenue:gold\",%lld]", revd); put(&inu, "[");
    int first = 1;
    for (int k = 0; k < PLAYERS; k++) if (delta[k]) { put(&acu, ",[\"w:%s:gold\",%lld]", player[k], delta[k]); put(&inu, "%s[\"%s\",\"magnet\",%d]", first ? "" : ",", player[k], dq[k]); first = 0; }
    put(&idem, "]"); put(&ent, "]"); put(&acu, "]"); put(&post, "]"); put(&inu, "]");
    // writes: entry first (FK parents), then the rest
    struct { sqlite3_stmt *s; buf *b; const char *w; } W[] = {
      {w_idem, &idem, "idem"}, {w_entry, &ent, "entry"}, {w_acct, &acu, "acct"}, {w_post, &post, "post"}, {w_inv, &inu, "inv"}};
    for (unsigned i = 0; i < sizeof W / sizeof W[0]; i++) {
      sqlite3_bind_text(W[i].s, 1, W[i].b->p, W[i].b->n, SQLITE_STATIC);
      int rc, rows = 0; while ((rc = sqlite3_step(W[i].s)) == SQLITE_ROW) rows++; ck(rc, W[i].w); sqlite3_reset(W[i].s);
    }
    exec("commit");
  }
}


// ---------- (V) set-oriented with multi-row VALUES and bound parameters ----------
typedef struct { int is_int; const char *s; long long i; } cell;
static cell *cells; static int ncells, capcells;
static void cs(const char *s) { if (ncells == capcells) { capcells = capcells * 2 + 1024; cells = realloc(cells, capcells * sizeof(cell)); } cells[ncells].is_int = 0; cells[ncells].s = s; ncells++; }
static void ci(long long v) { if (ncells == capcells) { capcells = capcells * 2 + 1024; cells = realloc(cells, capcells * sizeof(cell)); } cells[ncells].is_int = 1; cells[ncells].i = v; ncells++; }
static char strpool[1 << 24]; static size_t strpos;
static const char *keep(const char *s) { size_t n = strlen(s) + 1; char *d = strpool + strpos; memcpy(d, s, n); strpos += n; return d; }
// run "<head> VALUES (?,..),(?,..) <tail>" over the cells [from, to) with ncol columns per row
static int run_values(const char *head, const char *tail, int ncol, int from, int to) {
  int rows = (to - from) / ncol; if (!rows) return 0;
  static char sql[1 << 20]; size_t p = 0;
  p += sprintf(sql + p, "%s values ", head);
  for (int r = 0; r < rows; r++) { sql[p++] = r ? ',' : ' '; sql[p++] = '('; for (int c = 0; c < ncol; c++) { if (c) sql[p++] = ','; sql[p++] = '?'; } sql[p++] = ')'; }
  p += sprintf(sql + p, " %s", tail);
  sqlite3_stmt *s; ck(sqlite3_prepare_v2(db, sql, (int)p, &s, 0), head);
  for (int k = from; k < to; k++) { if (cells[k].is_int) sqlite3_bind_int64(s, k - from + 1, cells[k].i); else sqlite3_bind_text(s, k - from + 1, cells[k].s, -1, SQLITE_STATIC); }
  int rc, out = 0; while ((rc = sqlite3_step(s)) == SQLITE_ROW) out++; ck(rc, head); sqlite3_finalize(s);
  return out;
}
static void mode_v(int batches, int per) {
  sqlite3_stmt *r_acct = prep("select id, kind, balance from account where id in (select value from json_each(?1))");
  sqlite3_stmt *r_meta = prep("select (select value from meta where key = 'catalog_stamp'), (select id from receipt_key where retired_at is null order by created_at desc, id desc limit 1)");
  buf accts = {0}; static long long wal[PLAYERS], qty[PLAYERS]; long long rev = 0; static int seen[PLAYERS]; int bk[128], nb;
  for (int k = 0; k < PLAYERS; k++) qty[k] = 1;
  for (int b = 0; b < batches; b++) {
    strpos = 0;
    reset(&accts); put(&accts, "[\"s:revenue:gold\""); memset(seen, 0, sizeof seen);
    nb = 0;
    for (int n = 0; n < per; n++) { int k = PIDX(b * per + n); if (!seen[k]) { seen[k] = 1; bk[nb++] = k; put(&accts, ",\"w:%s:gold\"", player[k]); } }
    put(&accts, "]");
    exec("begin immediate");
    // reads: keys, players, inventory as row-value IN (VALUES ...) ; accounts via json (small)
    ncells = 0; for (int n = 0; n < per; n++) { char t[64]; sprintf(t, "player:%s", player[PIDX(b * per + n)]); cs(keep(t)); sprintf(t, "v-%d-%d", b, n); cs(keep(t)); }
    if (run_values("select scope, key from idempotency where (scope, key) in (", ")", 2, 0, ncells)) { fprintf(stderr, "replay?\n"); exit(1); }
    ncells = 0; for (int k = 0; k < PLAYERS; k++) if (seen[k]) cs(player[k]);
    run_values("select id, blocked, minor, country, (select max(e.id) from entry e where e.player_id = player.id) from player where id in (", ")", 1, 0, ncells);
    sqlite3_bind_text(r_acct, 1, accts.p, accts.n, SQLITE_STATIC);
    while (sqlite3_step(r_acct) == SQLITE_ROW) { const char *id = (const char *)sqlite3_column_text(r_acct, 0); long long bl = sqlite3_column_int64(r_acct, 2);
      if (id[0] == 's') rev = bl; else for (int q = 0; q < nb; q++) if (!strncmp(id + 2, player[bk[q]], 36)) { wal[bk[q]] = bl; break; } }
    sqlite3_reset(r_acct);
    ncells = 0; for (int k = 0; k < PLAYERS; k++) if (seen[k]) cs(player[k]);
    run_values("select player_id, sku, quantity from inventory where player_id in (", ")", 1, 0, ncells);
    step_done(r_meta, "meta");
    // build
    int c_idem, c_ent, c_post, c_acct, c_inv, end;
    static long long delta[PLAYERS]; static int dq[PLAYERS]; long long revd = 0;
    memset(delta, 0, sizeof delta); memset(dq, 0, sizeof dq);
    static char e[128][40], pu[128][40], r[128][40], sc[128][64], ky[128][32], wl[128][64]; long long tt[128], wafter[128], rafter[128], qafter[128]; int kk[128], ok[128];
    for (int n = 0; n < per; n++) {
      int k = PIDX(b * per + n); kk[n] = k; ok[n] = wal[k] >= 100; if (!ok[n]) continue;
      uuid(e[n]); uuid(pu[n]); uuid(r[n]); sprintf(sc[n], "player:%s", player[k]); sprintf(ky[n], "v-%d-%d", b, n); sprintf(wl[n], "w:%s:gold", player[k]);
      tt[n] = T++; wal[k] -= 100; rev += 100; delta[k] -= 100; revd += 100; qty[k] += 1; dq[k] += 1; wafter[n] = wal[k]; rafter[n] = rev; qafter[n] = qty[k];
    }
    ncells = 0;
    c_idem = ncells; for (int n = 0; n < per; n++) if (ok[n]) { cs(sc[n]); cs(ky[n]); cs("h"); ci(201); cs(answer); ci(tt[n]); }
    c_ent = ncells; for (int n = 0; n < per; n++) if (ok[n]) { char it[64]; sprintf(it, "[[\"magnet\",1,%lld]]", qafter[n]); cs(e[n]); cs(player[kk[n]]); cs(sc[n]); ci(tt[n]); cs(keep(it)); cs(pu[n]); cs(r[n]); cs(payload); cs(signature); }
    c_acct = ncells; ci(0); cs("s:revenue:gold"); ci(revd); for (int k = 0; k < PLAYERS; k++) if (delta[k]) { char t[64]; sprintf(t, "w:%s:gold", player[k]); ci(0); cs(keep(t)); ci(delta[k]); }
    c_post = ncells; for (int n = 0; n < per; n++) if (ok[n]) { cs(e[n]); cs("s:revenue:gold"); ci(100); ci(rafter[n]); cs(e[n]); cs(wl[n]); ci(-100); ci(wafter[n]); }
    c_inv = ncells; for (int k = 0; k < PLAYERS; k++) if (dq[k]) { cs(player[k]); cs("magnet"); ci(dq[k]); }
    end = ncells;
    run_values("insert into idempotency (scope, key, request_hash, status_code, response_body, created_at)", "", 6, c_idem, c_ent);
    run_values("insert into entry (id, player_id, actor, created_at, items, purchase_id, receipt_id, receipt_payload, receipt_signature, kind, purchase_offer, purchase_sku,"
      " purchase_quantity, purchase_price_index, purchase_currency, purchase_amount, purchase_catalog_version, receipt_key) select column1, column2, column3, column4, column5,"
      " column6, column7, column8, column9, 'purchase', 'offer', 'magnet', 1, 0, 'gold', 100, 1, 'rk_1' from (", ")", 9, c_ent, c_acct);
    run_values("update account set balance = balance + v.column3 from (", ") as v where account.id = v.column2 and (account.kind <> 'wallet' or account.balance + v.column3 >= 0) returning account.id, account.balance", 3, c_acct, c_post);
    run_values("insert into posting (entry_id, account_id, amount, balance_after, currency) select column1, column2, column3, column4, 'gold' from (", ")", 4, c_post, c_inv);
    run_values("update inventory set quantity = quantity + v.column3 from (", ") as v where inventory.player_id = v.column1 and inventory.sku = v.column2 and inventory.quantity + v.column3 >= 0 returning inventory.player_id, inventory.quantity", 3, c_inv, end);
    exec("commit");
  }
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "A"; int per = argc > 2 ? atoi(argv[2]) : 100; int total = argc > 3 ? atoi(argv[3]) : 20000;
  char path[128]; sprintf(path, "sqlbench-%s-%d-%d.sqlite", mode, per, getpid());
  memset(payload, 'x', 420); memset(signature, 's', 88); memset(answer, 'a', 1400);
  ck(sqlite3_open(path, &db), "open");
  exec("pragma journal_mode = wal; pragma synchronous = full; pragma foreign_keys = on; pragma busy_timeout = 5000; pragma wal_autocheckpoint = 4096;");
  if (getenv("CACHE_KB")) { char q[128]; sprintf(q, "pragma cache_size = -%s", getenv("CACHE_KB")); exec(q); }
  if (getenv("PAGE")) { char q[128]; sprintf(q, "pragma page_size = %s", getenv("PAGE")); exec(q); }
  seed();
  int walcount = argc > 4 && !strcmp(argv[4], "wal");
  hot = argc > 5 && !strcmp(argv[5], "hot");
  if (walcount) { exec("pragma wal_checkpoint(truncate); pragma wal_autocheckpoint = 0;"); sqlite3_wal_hook(db, on_wal, 0); }
  else { exec("pragma wal_checkpoint(truncate);"); sqlite3_wal_hook(db, on_commit_wal, 0); }
  long long rows_before = rows_held();
  int batches = total / per;
  long long io0 = io_written();
  double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
  if (!strcmp(mode, "A")) mode_a(batches, per); else if (!strcmp(mode, "B")) mode_b(batches, per, 0); else if (!strcmp(mode, "V")) mode_v(batches, per); else mode_c(batches, per);
  double w = now(CLOCK_MONOTONIC) - w0, c = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
  long long io = io_written() - io0;
  int n = batches * per;
  printf("mode %s, %d per commit, %d purchases: %.0f/s wall, %.1f us CPU per purchase, %.2f ms wall per commit\n", mode, per, n, n / w, c / n * 1e6, w / batches * 1e3);
  {
    sqlite3_stmt *v = prep("select (select balance from account where id = 's:revenue:gold'), (select count(*) from posting), (select sum(quantity) from inventory), (select count(*) from idempotency), (select count(*) from player_event), (select sum(balance) from account)");
    ck(sqlite3_step(v), "verify");
    printf("  check: revenue %lld, postings %lld, items %lld, keys %lld, events %lld, sum of balances %lld\n", sqlite3_column_int64(v, 0), sqlite3_column_int64(v, 1), sqlite3_column_int64(v, 2), sqlite3_column_int64(v, 3), sqlite3_column_int64(v, 4), sqlite3_column_int64(v, 5));
    sqlite3_finalize(v);
  }
  if (!walcount) {
    sqlite3_stmt *ps = prep("pragma page_size"); ck(sqlite3_step(ps), "page size"); long long page = sqlite3_column_int64(ps, 0); sqlite3_finalize(ps);
    printf("  written: %.1f rows per purchase, %.1f kB WAL per purchase, %.1f kB written per purchase (WAL and checkpoints)\n", (double)(rows_held() - rows_before) / n, wal_written * (page + 24.0) / n / 1024, io / 1024.0 / n);
  }
  if (walcount) printf("  WAL: %d frames, %.1f kB per purchase, %.1f frames per commit\n", wal_frames, wal_frames * 4120.0 / n / 1024, (double)wal_frames / batches);
  sqlite3_close(db);
  char cmd[300]; sprintf(cmd, "rm -f %s %s-wal %s-shm", path, path, path); system(cmd);
  return 0;
}
