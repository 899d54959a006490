//! Capture triggers, asserted with raw SQL: on SQLite in memory always, on
//! PostgreSQL / MySQL when configured (see `common_capture`).

mod common_capture;

use common_capture::{databases, exec_on, postgres, servers, sqlite_file, TestDb};
use flash_sea_orm::capture::{self, CaptureSpec};
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, TransactionTrait, Value};
use serde_json::{json, Value as Json};

/// One recorded change: table, old rows, new rows (absent = SQL NULL).
#[derive(Debug, Clone, PartialEq)]
struct Change {
    table: String,
    old: Option<Vec<Json>>,
    new: Option<Vec<Json>>,
}

async fn changes(t: &TestDb) -> Vec<Change> {
    let sql = match t.backend {
        DatabaseBackend::Postgres => {
            "SELECT table_name, old_keys::text, new_keys::text FROM flash_changes ORDER BY id"
        }
        _ => "SELECT table_name, old_keys, new_keys FROM flash_changes ORDER BY id",
    };
    let rows =
        t.db.query_all(Statement::from_string(t.backend, sql.to_owned()))
            .await
            .expect("read changes");
    // Row by row (`[[a1, b1], ...]`, MySQL), one row (`[a1, b1]`, SQLite's
    // row triggers) or, on PostgreSQL, column by column
    // (`{"c": [[a1, ...], [b1, ...]]}`): rows either way.
    let parse = |s: Option<String>| {
        s.map(|s| match serde_json::from_str::<Json>(&s) {
            Ok(Json::Array(a)) if t.backend == DatabaseBackend::MySql => a,
            Ok(Json::Array(a)) if t.backend == DatabaseBackend::Sqlite => {
                assert!(a.iter().all(|v| !v.is_array()), "one row: {s}");
                vec![Json::Array(a)]
            }
            Ok(Json::Object(o)) if t.backend == DatabaseBackend::Postgres => {
                let Some(Json::Array(cols)) = o.get("c") else {
                    panic!("no columns: {s}")
                };
                let cols: Vec<&Vec<Json>> = cols
                    .iter()
                    .map(|c| c.as_array().expect("a column is an array"))
                    .collect();
                let n = cols[0].len();
                assert!(cols.iter().all(|c| c.len() == n), "ragged: {s}");
                (0..n)
                    .map(|i| Json::Array(cols.iter().map(|c| c[i].clone()).collect()))
                    .collect()
            }
            other => panic!("not a record of this backend's shape: {s} ({other:?})"),
        })
    };
    rows.into_iter()
        .map(|r| Change {
            table: r.try_get_by_index(0).unwrap(),
            old: parse(r.try_get_by_index(1).unwrap()),
            new: parse(r.try_get_by_index(2).unwrap()),
        })
        .collect()
}

async fn clear(t: &TestDb) {
    t.run("DELETE FROM flash_changes").await;
}

/// All old and all new rows recorded for `table`, sorted (one statement is
/// one change on PostgreSQL, one change per row elsewhere).
fn rows_of(ch: &[Change], table: &str) -> (Vec<Json>, Vec<Json>) {
    let mut old = Vec::new();
    let mut new = Vec::new();
    for c in ch.iter().filter(|c| c.table == table) {
        old.extend(c.old.clone().unwrap_or_default());
        new.extend(c.new.clone().unwrap_or_default());
    }
    let key = |v: &Json| v.to_string();
    old.sort_by_key(key);
    new.sort_by_key(key);
    (old, new)
}

fn parent_spec() -> CaptureSpec {
    CaptureSpec::new("parent", ["id"], ["slug"]).unwrap()
}

fn child_spec() -> CaptureSpec {
    CaptureSpec::new("child", ["id"], ["parent_id"]).unwrap()
}

async fn schema(t: &TestDb) {
    let engine = if t.backend == DatabaseBackend::MySql {
        " ENGINE=InnoDB"
    } else {
        ""
    };
    t.run(&format!(
        "CREATE TABLE parent (id INTEGER NOT NULL PRIMARY KEY, slug VARCHAR(100), note VARCHAR(100)){engine}"
    ))
    .await;
    t.run(&format!(
        "CREATE TABLE child (id INTEGER NOT NULL PRIMARY KEY, parent_id INTEGER NOT NULL, name VARCHAR(100), \
         FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE){engine}"
    ))
    .await;
}

async fn setup(t: &TestDb) {
    schema(t).await;
    let r = capture::install(&t.db, &[parent_spec(), child_spec()])
        .await
        .unwrap_or_else(|e| panic!("{:?}: install: {e}", t.backend));
    assert!(r.created_changes_table);
    assert_eq!(r.installed, ["parent", "child"]);
}

async fn trigger_count(t: &TestDb) -> usize {
    capture::installed(&t.db).await.unwrap().len()
}

#[tokio::test]
async fn raw_insert_update_delete_are_captured() {
    for t in databases().await {
        setup(&t).await;
        let b = t.backend;
        t.run("INSERT INTO parent (id, slug, note) VALUES (1, 'a', 'x')")
            .await;
        t.run("UPDATE parent SET note = 'y' WHERE id = 1").await;
        t.run("UPDATE parent SET slug = 'b' WHERE id = 1").await;
        t.run("DELETE FROM parent WHERE id = 1").await;
        // A change of case only is a change of key, whatever the collation.
        t.run("INSERT INTO parent (id, slug) VALUES (2, 'Q')").await;
        t.run("UPDATE parent SET slug = 'q' WHERE id = 2").await;
        // A statement that touches no row records nothing.
        t.run("UPDATE parent SET note = 'z' WHERE id = 42").await;
        t.run("DELETE FROM parent WHERE id = 42").await;
        let ch = changes(&t).await;
        let expect = vec![
            Change {
                table: "parent".into(),
                old: None,
                new: Some(vec![json!([1, "a"])]),
            },
            // No captured value changed: the old keys are the new ones.
            Change {
                table: "parent".into(),
                old: None,
                new: Some(vec![json!([1, "a"])]),
            },
            Change {
                table: "parent".into(),
                old: Some(vec![json!([1, "a"])]),
                new: Some(vec![json!([1, "b"])]),
            },
            Change {
                table: "parent".into(),
                old: Some(vec![json!([1, "b"])]),
                new: None,
            },
            Change {
                table: "parent".into(),
                old: None,
                new: Some(vec![json!([2, "Q"])]),
            },
            Change {
                table: "parent".into(),
                old: Some(vec![json!([2, "Q"])]),
                new: Some(vec![json!([2, "q"])]),
            },
        ];
        assert_eq!(ch, expect, "{b:?}");
        t.finish().await;
    }
}

#[tokio::test]
async fn primary_key_change_records_old_and_new() {
    for t in databases().await {
        setup(&t).await;
        t.run("INSERT INTO parent (id, slug) VALUES (1, 'a'), (2, 'b')")
            .await;
        clear(&t).await;
        t.run("UPDATE parent SET id = id + 10").await;
        let (old, new) = rows_of(&changes(&t).await, "parent");
        assert_eq!(old, [json!([1, "a"]), json!([2, "b"])], "{:?}", t.backend);
        assert_eq!(new, [json!([11, "a"]), json!([12, "b"])], "{:?}", t.backend);
        t.finish().await;
    }
}

#[tokio::test]
async fn bulk_update_is_one_change_on_postgres() {
    for t in databases().await {
        setup(&t).await;
        let values: Vec<String> = (1..=1000).map(|i| format!("({i}, 's{i}', 'n')")).collect();
        t.run(&format!(
            "INSERT INTO parent (id, slug, note) VALUES {}",
            values.join(", ")
        ))
        .await;
        let ch = changes(&t).await;
        if t.backend == DatabaseBackend::Postgres {
            assert_eq!(ch.len(), 1);
            assert_eq!(ch[0].new.as_ref().map(Vec::len), Some(1000));
        } else {
            assert_eq!(ch.len(), 1000, "{:?}", t.backend);
        }
        let sorted = |suffix: &str| {
            let mut v: Vec<Json> = (1..=1000)
                .map(|i| json!([i, format!("s{i}{suffix}")]))
                .collect();
            v.sort_by_key(|v| v.to_string());
            v
        };
        // A non-key update: new keys only.
        clear(&t).await;
        t.run("UPDATE parent SET note = 'm'").await;
        let ch = changes(&t).await;
        if t.backend == DatabaseBackend::Postgres {
            assert_eq!(ch.len(), 1, "one change row for one statement");
            assert_eq!(ch[0].old, None);
            assert_eq!(ch[0].new.as_ref().map(Vec::len), Some(1000));
        } else {
            assert_eq!(ch.len(), 1000, "{:?}", t.backend);
        }
        let (old, new) = rows_of(&ch, "parent");
        assert!(old.is_empty());
        assert_eq!(new, sorted(""));
        // A key update: old and new keys.
        clear(&t).await;
        let concat = if t.backend == DatabaseBackend::MySql {
            "UPDATE parent SET slug = CONCAT(slug, 'x')"
        } else {
            "UPDATE parent SET slug = slug || 'x'"
        };
        t.run(concat).await;
        let ch = changes(&t).await;
        if t.backend == DatabaseBackend::Postgres {
            assert_eq!(ch.len(), 1, "one change row for one statement");
            assert_eq!(ch[0].old.as_ref().map(Vec::len), Some(1000));
            assert_eq!(ch[0].new.as_ref().map(Vec::len), Some(1000));
        } else {
            assert_eq!(ch.len(), 1000, "{:?}", t.backend);
        }
        let (old, new) = rows_of(&ch, "parent");
        assert_eq!(old, sorted(""));
        assert_eq!(new, sorted("x"));
        t.finish().await;
    }
}

#[tokio::test]
async fn cascade_delete_is_captured() {
    for t in databases().await {
        setup(&t).await;
        t.run("INSERT INTO parent (id, slug) VALUES (1, 'a'), (2, 'b')")
            .await;
        t.run("INSERT INTO child (id, parent_id, name) VALUES (10, 1, 'x'), (11, 1, 'y'), (12, 2, 'z')")
            .await;
        clear(&t).await;
        t.run("DELETE FROM parent WHERE id = 1").await;
        let ch = changes(&t).await;
        let (old, new) = rows_of(&ch, "parent");
        assert_eq!(old, [json!([1, "a"])]);
        assert!(new.is_empty());
        // (MySQL/MariaDB: cascaded deletes fire no trigger; a BEFORE DELETE
        // trigger on the parent records the children instead.)
        let (old, _) = rows_of(&ch, "child");
        assert_eq!(old, [json!([10, 1]), json!([11, 1])], "{:?}", t.backend);
        t.finish().await;
    }
}

#[tokio::test]
async fn rolled_back_transaction_records_nothing() {
    for t in databases().await {
        setup(&t).await;
        let txn = t.db.begin().await.unwrap();
        exec_on(
            &txn,
            "INSERT INTO parent (id, slug) VALUES (1, 'a')",
            vec![],
        )
        .await
        .unwrap();
        exec_on(&txn, "UPDATE parent SET slug = 'b'", vec![])
            .await
            .unwrap();
        let sql = "SELECT COUNT(*) FROM flash_changes";
        let r = txn
            .query_one(Statement::from_string(t.backend, sql.to_owned()))
            .await
            .unwrap()
            .unwrap();
        let n: i64 = r.try_get_by_index(0).unwrap();
        assert_eq!(n, 2, "recorded in the writing transaction");
        txn.rollback().await.unwrap();
        assert_eq!(changes(&t).await, Vec::new(), "{:?}", t.backend);
        t.finish().await;
    }
}

#[tokio::test]
async fn install_is_idempotent_and_replaces_and_drops() {
    for t in databases().await {
        let b = t.backend;
        setup(&t).await;
        // MySQL: plus the parent's trigger recording cascaded child deletes;
        // PostgreSQL: plus each table's row trigger flagging key changes.
        let six = match b {
            DatabaseBackend::MySql => 7,
            DatabaseBackend::Postgres => 8,
            DatabaseBackend::Sqlite => 6,
        };
        assert_eq!(trigger_count(&t).await, six);
        let again = capture::install(&t.db, &[parent_spec(), child_spec()])
            .await
            .unwrap();
        assert!(!again.changed(), "{b:?}: {again:?}");
        assert_eq!(again.unchanged, ["parent", "child"]);
        assert_eq!(trigger_count(&t).await, six);

        // A changed spec replaces the table's triggers.
        let wider = CaptureSpec::new("parent", ["id"], ["slug", "note"]).unwrap();
        let r = capture::install(&t.db, &[wider.clone(), child_spec()])
            .await
            .unwrap();
        assert_eq!(r.replaced, ["parent"], "{b:?}: {r:?}");
        assert_eq!(r.unchanged, ["child"]);
        let inst = capture::installed(&t.db).await.unwrap();
        assert_eq!(inst.len(), six);
        let parent: Vec<_> = inst.iter().filter(|i| i.table == "parent").collect();
        // The child's own triggers: insert, update, delete (and PostgreSQL's flag).
        let own = if b == DatabaseBackend::Postgres { 4 } else { 3 };
        assert_eq!(parent.len(), six - own);
        if b != DatabaseBackend::MySql {
            assert!(parent.iter().all(|i| i.version == wider.version()));
        }
        let version = parent[0].version.clone();
        assert!(parent.iter().all(|i| i.version == version));
        t.run("INSERT INTO parent (id, slug, note) VALUES (1, 'a', 'n')")
            .await;
        let ch = changes(&t).await;
        assert_eq!(ch.len(), 1, "{b:?}: the old triggers are gone");
        assert_eq!(ch[0].new, Some(vec![json!([1, "a", "n"])]));

        // A start-up with fewer tables (another service's declarations)
        // leaves the others' capture alone.
        let r = capture::install_keeping_others(&t.db, std::slice::from_ref(&wider))
            .await
            .unwrap();
        assert!(r.dropped.is_empty(), "{b:?}: {r:?}");
        let inst = capture::installed(&t.db).await.unwrap();
        let child = inst.iter().filter(|i| i.table == "child").count();
        assert_eq!(child, own, "{b:?}: the child keeps its capture");

        // A table no longer cached loses its triggers (and function).
        let r = capture::install(&t.db, std::slice::from_ref(&wider))
            .await
            .unwrap();
        assert_eq!(r.dropped, ["child"], "{b:?}: {r:?}");
        // (On MySQL the parent's cascade trigger went with the previous call
        // already: cascades are found among the specs given.)
        assert_eq!(r.unchanged, ["parent"]);
        let inst = capture::installed(&t.db).await.unwrap();
        assert!(inst.iter().all(|i| i.table == "parent"));
        assert_eq!(inst.len(), own);
        if b == DatabaseBackend::Postgres {
            let r =
                t.db.query_one(Statement::from_string(
                    b,
                    "SELECT COUNT(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname = current_schema() AND p.proname LIKE 'flash\\_capture\\_%'"
                        .to_owned(),
                ))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                r.try_get_by_index::<i64>(0).unwrap(),
                2,
                "the parent's two functions left"
            );
        }
        t.run("INSERT INTO child (id, parent_id) VALUES (5, 1)")
            .await;
        assert_eq!(changes(&t).await.len(), 1, "{b:?}: child not captured");

        // Nothing cached: everything goes.
        let r = capture::install(&t.db, &[]).await.unwrap();
        assert_eq!(r.dropped, ["parent"]);
        assert_eq!(trigger_count(&t).await, 0);
        t.finish().await;
    }
}

#[tokio::test]
async fn pasted_ddl_equals_install() {
    for t in databases().await {
        schema(&t).await;
        for sql in capture::changes_table_ddl(t.backend) {
            t.run(&sql).await;
        }
        for sql in capture::ddl(t.backend, &parent_spec()) {
            t.run(&sql).await;
        }
        // Same spec: install sees the pasted triggers as its own.
        let r = capture::install(&t.db, &[parent_spec()]).await.unwrap();
        if t.backend == DatabaseBackend::Postgres {
            // install qualifies the function with the schema, but the version
            // (trigger names) is the same: nothing to do.
            assert!(!r.changed(), "{r:?}");
        } else {
            assert!(!r.changed(), "{:?}: {r:?}", t.backend);
        }
        for sql in capture::drop_ddl(t.backend, &parent_spec()) {
            t.run(&sql).await;
        }
        assert_eq!(trigger_count(&t).await, 0);
        t.finish().await;
    }
}

#[tokio::test]
async fn values_round_trip() {
    for t in databases().await {
        let b = t.backend;
        let (uuid, ts, flag, big) = match b {
            DatabaseBackend::Postgres => ("UUID", "TIMESTAMP", "BOOLEAN", "BIGINT"),
            DatabaseBackend::MySql => ("BINARY(16)", "DATETIME(6)", "BOOLEAN", "BIGINT UNSIGNED"),
            DatabaseBackend::Sqlite => ("BLOB", "TEXT", "BOOLEAN", "INTEGER"),
        };
        t.run(&format!(
            "CREATE TABLE vals (id BIGINT NOT NULL PRIMARY KEY, s VARCHAR(200), u {uuid}, ts {ts}, f {flag}, big {big})"
        ))
        .await;
        let spec = CaptureSpec::new("vals", ["id"], ["s", "u", "ts", "f", "big"]).unwrap();
        capture::install(&t.db, &[spec]).await.unwrap();
        let text = "it's \"quoted\" \\ back, é ☃ 𝄞 \n tab\t";
        let u = uuid_value();
        let when = sea_orm::prelude::ChronoDate::from_ymd_opt(2024, 1, 2)
            .unwrap()
            .and_hms_micro_opt(3, 4, 5, 123_456)
            .unwrap();
        let ts_value = if b == DatabaseBackend::Sqlite {
            Value::from("2024-01-02 03:04:05.123456")
        } else {
            Value::from(when)
        };
        let big_value = if b == DatabaseBackend::MySql {
            Value::from(u64::MAX)
        } else {
            Value::from(i64::MAX)
        };
        t.exec(
            "INSERT INTO vals (id, s, u, ts, f, big) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                Value::from(-7i64),
                Value::from(text),
                Value::from(u),
                ts_value,
                Value::from(true),
                big_value,
            ],
        )
        .await
        .unwrap();
        t.run("INSERT INTO vals (id) VALUES (8)").await;
        let ch = changes(&t).await;
        let (_, new) = rows_of(&ch, "vals");
        let hex = u.simple().to_string().to_uppercase();
        let expected_first = match b {
            DatabaseBackend::Postgres => json!([
                -7,
                text,
                u.to_string(),
                "2024-01-02T03:04:05.123456",
                true,
                i64::MAX
            ]),
            DatabaseBackend::MySql => {
                json!([-7, text, hex, "2024-01-02 03:04:05.123456", 1, u64::MAX])
            }
            DatabaseBackend::Sqlite => {
                json!([-7, text, hex, "2024-01-02 03:04:05.123456", 1, i64::MAX])
            }
        };
        assert_eq!(new.len(), 2);
        let first = new.iter().find(|r| r[0] == json!(-7)).unwrap();
        assert_eq!(first, &expected_first, "{b:?}");
        let second = new.iter().find(|r| r[0] == json!(8)).unwrap();
        assert_eq!(second, &json!([8, null, null, null, null, null]), "{b:?}");

        // Rewriting the same values (NULLs included) is not a change of key;
        // a NULL becoming a value is.
        clear(&t).await;
        t.run("UPDATE vals SET s = s, u = u, ts = ts, big = big")
            .await;
        let (old, new) = rows_of(&changes(&t).await, "vals");
        assert!(old.is_empty(), "{b:?}: {old:?}");
        assert_eq!(new.len(), 2);
        clear(&t).await;
        t.run("UPDATE vals SET s = 'now set' WHERE id = 8").await;
        let (old, new) = rows_of(&changes(&t).await, "vals");
        assert_eq!(old, [json!([8, null, null, null, null, null])], "{b:?}");
        assert_eq!(
            new,
            [json!([8, "now set", null, null, null, null])],
            "{b:?}"
        );
        t.finish().await;
    }
}

fn uuid_value() -> sea_orm::prelude::Uuid {
    sea_orm::prelude::Uuid::parse_str("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9").unwrap()
}

#[tokio::test]
async fn postgres_notifies_at_commit() {
    let Some(t) = postgres().await else {
        eprintln!("no PostgreSQL configured: skipped");
        return;
    };
    let table = common_capture::unique("listened");
    t.run(&format!(
        "CREATE TABLE {table} (id INTEGER PRIMARY KEY, slug TEXT)"
    ))
    .await;
    capture::install(
        &t.db,
        &[CaptureSpec::new(&table, ["id"], ["slug"]).unwrap()],
    )
    .await
    .unwrap();
    let url = t.url.clone().unwrap();
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect(&url)
        .await
        .unwrap();
    listener.listen(capture::NOTIFY_CHANNEL).await.unwrap();
    let txn = t.db.begin().await.unwrap();
    exec_on(
        &txn,
        &format!("INSERT INTO {table} (id, slug) VALUES (1, 'a')"),
        vec![],
    )
    .await
    .unwrap();
    // Nothing before the commit.
    // Payload: the writing transaction's id, a space, `<schema>.<table>`.
    let ours = |n: &sea_orm::sqlx::postgres::PgNotification| {
        n.payload()
            .split_once(' ')
            .is_some_and(|(id, t)| id.parse::<i64>().is_ok() && t.ends_with(&format!(".{table}")))
    };
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), async {
        loop {
            let n = listener.recv().await.unwrap();
            if ours(&n) {
                return n;
            }
        }
    })
    .await;
    assert!(early.is_err(), "notified before commit");
    txn.commit().await.unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let n = listener.recv().await.unwrap();
            if ours(&n) {
                return n;
            }
        }
    })
    .await
    .expect("notification after commit");
    assert_eq!(n.channel(), capture::NOTIFY_CHANNEL);
    t.finish().await;
}

#[tokio::test]
async fn primary_key_only_spec() {
    for t in databases().await {
        t.run("CREATE TABLE solo (id INTEGER NOT NULL PRIMARY KEY, note VARCHAR(10))")
            .await;
        let spec = CaptureSpec::new("solo", ["id"], Vec::<&str>::new()).unwrap();
        capture::install(&t.db, &[spec]).await.unwrap();
        t.run("INSERT INTO solo (id, note) VALUES (1, 'a'), (2, 'b')")
            .await;
        t.run("UPDATE solo SET note = 'c'").await;
        t.run("UPDATE solo SET id = 3 WHERE id = 2").await;
        let ch = changes(&t).await;
        let (old, new) = rows_of(&ch, "solo");
        assert_eq!(old, [json!([2])], "{:?}", t.backend);
        assert_eq!(
            new,
            [json!([1]), json!([1]), json!([2]), json!([2]), json!([3])],
            "{:?}",
            t.backend
        );
        t.finish().await;
    }
}

/// MySQL/MariaDB: rows deleted by ON DELETE CASCADE two levels down, under an
/// uncached parent, are recorded by BEFORE DELETE triggers on the top table.
#[tokio::test]
async fn mysql_cascade_chains() {
    for t in databases().await {
        if t.backend != DatabaseBackend::MySql {
            t.finish().await;
            continue;
        }
        t.run("CREATE TABLE a (id INTEGER NOT NULL PRIMARY KEY) ENGINE=InnoDB")
            .await;
        t.run(
            "CREATE TABLE b (id INTEGER NOT NULL PRIMARY KEY, a_id INTEGER NOT NULL, \
             FOREIGN KEY (a_id) REFERENCES a (id) ON DELETE CASCADE) ENGINE=InnoDB",
        )
        .await;
        t.run(
            "CREATE TABLE c (id INTEGER NOT NULL PRIMARY KEY, b_id INTEGER NOT NULL, tag VARCHAR(10), \
             FOREIGN KEY (b_id) REFERENCES b (id) ON DELETE CASCADE) ENGINE=InnoDB",
        )
        .await;
        let c_spec = CaptureSpec::new("c", ["id"], ["tag"]).unwrap();
        let b_spec = CaptureSpec::new("b", ["id"], ["a_id"]).unwrap();
        let r = capture::install(&t.db, &[b_spec.clone(), c_spec.clone()])
            .await
            .unwrap();
        // a (uncached) gets cascade triggers for b and for c (through b); b for c.
        assert_eq!(r.installed, ["b", "c", "a"], "{r:?}");
        let again = capture::install(&t.db, &[b_spec, c_spec]).await.unwrap();
        assert!(!again.changed(), "{again:?}");
        t.run("INSERT INTO a VALUES (1), (2)").await;
        t.run("INSERT INTO b VALUES (10, 1), (11, 1), (12, 2)")
            .await;
        t.run("INSERT INTO c VALUES (100, 10, 'x'), (101, 11, 'y'), (102, 12, 'z')")
            .await;
        clear(&t).await;
        t.run("DELETE FROM a WHERE id = 1").await;
        let ch = changes(&t).await;
        assert_eq!(rows_of(&ch, "b").0, [json!([10, 1]), json!([11, 1])]);
        assert_eq!(rows_of(&ch, "c").0, [json!([100, "x"]), json!([101, "y"])]);
        assert!(rows_of(&ch, "a").0.is_empty());
        clear(&t).await;
        t.run("DELETE FROM b WHERE id = 12").await;
        let ch = changes(&t).await;
        assert_eq!(rows_of(&ch, "b").0, [json!([12, 2])]);
        assert_eq!(rows_of(&ch, "c").0, [json!([102, "z"])]);
        // Nothing cached any more: every trigger goes, a's too.
        let r = capture::install(&t.db, &[]).await.unwrap();
        assert_eq!(r.dropped, ["a", "b", "c"]);
        assert_eq!(trigger_count(&t).await, 0);
        t.finish().await;
    }
}

/// MySQL/MariaDB: rows whose foreign key a delete sets to NULL (directly,
/// or below an ON DELETE CASCADE) are recorded with their old and their new
/// (NULL) key values.
#[tokio::test]
async fn mysql_set_null_is_captured() {
    for t in databases().await {
        if t.backend != DatabaseBackend::MySql {
            t.finish().await;
            continue;
        }
        t.run("CREATE TABLE a (id INTEGER NOT NULL PRIMARY KEY) ENGINE=InnoDB")
            .await;
        t.run(
            "CREATE TABLE b (id INTEGER NOT NULL PRIMARY KEY, a_id INTEGER NOT NULL, \
             FOREIGN KEY (a_id) REFERENCES a (id) ON DELETE CASCADE) ENGINE=InnoDB",
        )
        .await;
        t.run(
            "CREATE TABLE c (id INTEGER NOT NULL PRIMARY KEY, b_id INTEGER NULL, \
             FOREIGN KEY (b_id) REFERENCES b (id) ON DELETE SET NULL) ENGINE=InnoDB",
        )
        .await;
        let c_spec = CaptureSpec::new("c", ["id"], ["b_id"]).unwrap();
        let r = capture::install(&t.db, std::slice::from_ref(&c_spec))
            .await
            .unwrap();
        // b sets c's rows to NULL; a cascades to b, which sets them to NULL.
        assert_eq!(r.installed, ["c", "a", "b"], "{r:?}");
        t.run("INSERT INTO a VALUES (1), (2)").await;
        t.run("INSERT INTO b VALUES (10, 1), (11, 2)").await;
        t.run("INSERT INTO c VALUES (100, 10), (101, 10), (102, 11)")
            .await;
        clear(&t).await;
        t.run("DELETE FROM b WHERE id = 10").await;
        let ch = changes(&t).await;
        assert_eq!(
            rows_of(&ch, "c"),
            (
                vec![json!([100, 10]), json!([101, 10])],
                vec![json!([100, null]), json!([101, null])]
            )
        );
        clear(&t).await;
        t.run("DELETE FROM a WHERE id = 2").await;
        let ch = changes(&t).await;
        assert_eq!(
            rows_of(&ch, "c"),
            (vec![json!([102, 11])], vec![json!([102, null])])
        );
        capture::install(&t.db, &[]).await.unwrap();
        t.finish().await;
    }
}

/// MySQL/MariaDB fire no trigger for `ON UPDATE CASCADE` / `SET NULL`
/// either: the parent's `BEFORE UPDATE` trigger records the child rows that
/// a key change reaches, before and after.
#[tokio::test]
async fn mysql_on_update_actions_are_captured() {
    for t in databases().await {
        if t.backend != DatabaseBackend::MySql {
            t.finish().await;
            continue;
        }
        t.run("CREATE TABLE a (id INTEGER NOT NULL PRIMARY KEY, note TEXT) ENGINE=InnoDB")
            .await;
        t.run(
            "CREATE TABLE b (id INTEGER NOT NULL PRIMARY KEY, a_id INTEGER NULL, \
             FOREIGN KEY (a_id) REFERENCES a (id) ON UPDATE CASCADE) ENGINE=InnoDB",
        )
        .await;
        t.run(
            "CREATE TABLE c (id INTEGER NOT NULL PRIMARY KEY, a_id INTEGER NULL, \
             FOREIGN KEY (a_id) REFERENCES a (id) ON UPDATE SET NULL) ENGINE=InnoDB",
        )
        .await;
        let specs = [
            CaptureSpec::new("b", ["id"], ["a_id"]).unwrap(),
            CaptureSpec::new("c", ["id"], ["a_id"]).unwrap(),
        ];
        let r = capture::install(&t.db, &specs).await.unwrap();
        assert!(r.installed.iter().any(|t| t == "a"), "{r:?}");
        t.run("INSERT INTO a VALUES (1, 'x'), (2, 'y')").await;
        t.run("INSERT INTO b VALUES (10, 1), (11, 1), (12, 2)")
            .await;
        t.run("INSERT INTO c VALUES (20, 1), (21, 2)").await;
        clear(&t).await;
        // Not a key change: nothing reached, nothing recorded.
        t.run("UPDATE a SET note = 'z' WHERE id = 1").await;
        assert!(changes(&t).await.is_empty());
        t.run("UPDATE a SET id = 5 WHERE id = 1").await;
        let ch = changes(&t).await;
        assert_eq!(
            rows_of(&ch, "b"),
            (
                vec![json!([10, 1]), json!([11, 1])],
                vec![json!([10, 5]), json!([11, 5])]
            )
        );
        assert_eq!(
            rows_of(&ch, "c"),
            (vec![json!([20, 1])], vec![json!([20, null])])
        );
        // What the database did is what was recorded.
        let moved =
            t.db.query_all(Statement::from_string(
                t.backend,
                "SELECT a_id FROM b WHERE id IN (10, 11)".to_owned(),
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<i32>(0).unwrap())
            .collect::<Vec<_>>();
        assert_eq!(moved, [5, 5]);
        capture::install(&t.db, &[]).await.unwrap();
        t.finish().await;
    }
}

/// Every process of a service installs at startup: 8 installs at once, each on
/// a pool of its own, all succeed; one installs, the others find its triggers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_installs_are_serialized() {
    let mut all = vec![sqlite_file().await];
    all.extend(servers().await);
    for t in all {
        let b = t.backend;
        schema(&t).await;
        let peers = t.peers(8).await.expect("peers");
        let mut tasks = tokio::task::JoinSet::new();
        for p in peers {
            tasks.spawn(async move {
                let r = capture::install(&p, &[parent_spec(), child_spec()]).await;
                let _ = p.close().await;
                r
            });
        }
        let mut reports = Vec::new();
        while let Some(r) = tasks.join_next().await {
            reports.push(r.unwrap().unwrap_or_else(|e| panic!("{b:?}: install: {e}")));
        }
        assert_eq!(reports.len(), 8);
        let created = reports.iter().filter(|r| r.created_changes_table).count();
        assert_eq!(created, 1, "{b:?}: {reports:?}");
        let first: Vec<_> = reports.iter().filter(|r| r.changed()).collect();
        assert_eq!(first.len(), 1, "{b:?}: {reports:?}");
        assert_eq!(first[0].installed, ["parent", "child"], "{b:?}");
        for r in reports.iter().filter(|r| !r.changed()) {
            assert_eq!(r.unchanged, ["parent", "child"], "{b:?}: {r:?}");
        }
        let six = match b {
            DatabaseBackend::MySql => 7,
            DatabaseBackend::Postgres => 8,
            DatabaseBackend::Sqlite => 6,
        };
        assert_eq!(trigger_count(&t).await, six, "{b:?}");
        if b == DatabaseBackend::Postgres {
            let r =
                t.db.query_one(Statement::from_string(
                    b,
                    "SELECT COUNT(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname = current_schema() AND p.proname LIKE 'flash\\_capture\\_%'"
                        .to_owned(),
                ))
                .await
                .unwrap()
                .unwrap();
            // Per table: the statement triggers' and the key-change flag's.
            assert_eq!(r.try_get_by_index::<i64>(0).unwrap(), 4, "four functions");
        }
        // One set of triggers: one write, one change.
        t.run("INSERT INTO parent (id, slug) VALUES (1, 'a')").await;
        let ch = changes(&t).await;
        assert_eq!(ch.len(), 1, "{b:?}: {ch:?}");
        assert_eq!(ch[0].new, Some(vec![json!([1, "a"])]));
        t.finish().await;
    }
}
