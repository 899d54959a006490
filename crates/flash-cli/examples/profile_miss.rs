//! A fixed workload for `valgrind --tool=callgrind`: misses right after an
//! invalidation (the key holds a write's marker) on SQLite and a cache server,
//! against the floor under them: the raw client's read-and-lease over the
//! same marker, then the same SeaORM query, then its fill. The first argument picks the
//! loop (`miss`, `floor`), the second how many times it runs, the third the
//! cache URL (default `redis://127.0.0.1:6379/0`): the difference of two
//! runs' instruction counts, divided by the difference of their counts, is
//! the cost of one operation without the set-up.
//!
//! ```sh
//! cargo build --release --example profile_miss
//! valgrind --tool=callgrind target/release/examples/profile_miss miss 2000
//! ```

use flash::{by, Registrar};
use flash_core::codec::{encode_entry, stale_prefix, Entry};
use flash_core::{Backend, KeySet};
use flash_test_kit::entities::event;
use sea_orm::{EntityTrait, Set};
use std::collections::BTreeSet;

const ROWS: i32 = 100;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("miss");
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let url = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let db = flash::config::connect_database("sqlite::memory:").await?;
    flash_test_kit::schema::create_tables(&db).await?;
    let backend = flash::config::cache_backend(&url).await?;
    let raw: std::sync::Arc<dyn Backend> = if url.starts_with("memcache") {
        std::sync::Arc::new(flash_memcache::MemcacheBackend::connect(&url).await?)
    } else {
        std::sync::Arc::new(flash_redis::RedisBackend::connect(&url).await?)
    };
    let prefix = format!("fprof{}:", std::process::id());
    let mut reg = Registrar::new(db.clone())
        .configure(|b| b.backend_arc(backend).prefix(prefix))
        .capture(false)
        .outbox(false);
    flash_test_kit::declare(&mut reg, std::time::Duration::from_secs(60))?;
    let fdb = reg.build().await?;
    let mut ids = Vec::new();
    for i in 0..ROWS {
        let e = fdb
            .insert(event::ActiveModel {
                slug: Set(format!("e{i}")),
                title: Set("t".into()),
                city: Set("Oslo".into()),
                ..Default::default()
            })
            .await?;
        ids.push(e.id);
    }
    let events = fdb.cache::<event::Entity>();
    let ttl = fdb.flash().settings().lease_ttl;
    let mut answered = 0usize;
    for i in 0..n {
        let id = ids[i % ids.len()];
        let key = events.cache_key(&by(event::Column::Id, id))?;
        let ks = KeySet {
            unset: BTreeSet::from([key.clone()]),
            dynamic: BTreeSet::new(),
        };
        fdb.flash().apply_invalidation("event", &ks).await?;
        if what == "floor" {
            let lease = encode_entry(&Entry::Lease {
                token: i as u64,
                at_ms: 0,
            });
            let read = raw
                .get_or_lease(std::slice::from_ref(&key), &lease, stale_prefix(), ttl)
                .await?;
            let row = event::Entity::find_by_id(id).one(&db).await?;
            // The fill, as flash's (a value of about a row's size).
            let filled = match &read.lease {
                Some(l) => raw.swap_lease(&key, l, Some(&[7u8; 100]), ttl).await?,
                None => false,
            };
            answered += usize::from(filled && row.is_some());
        } else {
            let (row, _) = events.get_with_outcome(by(event::Column::Id, id)).await?;
            answered += usize::from(row.is_some());
            fdb.flash().settled().await;
        }
    }
    println!("{answered} of {n} answered");
    Ok(())
}
