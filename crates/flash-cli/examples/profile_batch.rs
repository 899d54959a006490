//! A fixed workload for `valgrind --tool=callgrind`: batches of 100 cached
//! lookups and single hits on SQLite + the in-process cache (instruction
//! counts do not depend on machine load, so profiles are repeatable).
//!
//! ```sh
//! cargo build --release --example profile_batch
//! valgrind --tool=callgrind target/release/examples/profile_batch
//! ```
//!
//! `FLASH_CACHE_URL` chooses the cache as everywhere else (unset: in
//! process). With `PROFILE_UNTIMED=1` the handle does not time its lookups
//! (`FlashBuilder::time_lookups(false)`), to count what timing costs.
//!
//! Optional arguments: what each round runs (`both`, the default: a batch
//! of 100 and 100 single hits; `batch`; `one`; `floor`: one `get_many` of
//! the same keys, decoded) and how many rounds (200).
//! The difference of two runs' counts divided by the difference of their
//! rounds is one round without the set-up:
//!
//! ```sh
//! valgrind --tool=callgrind target/release/examples/profile_batch batch 100
//! valgrind --tool=callgrind target/release/examples/profile_batch batch 300
//! ```

use flash::{by, Registrar};
use flash_test_kit::entities::event;
use sea_orm::Set;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = flash::config::connect_database("sqlite::memory:").await?;
    flash_test_kit::schema::create_tables(&db).await?;
    let untimed = std::env::var_os("PROFILE_UNTIMED").is_some();
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("both");
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(200);
    // `FLASH_CACHE_URL` picks the cache (unset: in process), so a server's
    // path (its client, the seal check) can be counted too.
    let cache = flash::config::cache_backend(&flash::config::cache_url()).await?;
    let mut reg = Registrar::new(db).configure(|b| b.backend_arc(cache).time_lookups(!untimed));
    flash_test_kit::declare(&mut reg, std::time::Duration::from_secs(60))?;
    let fdb = reg.build().await?;
    let mut ids = Vec::new();
    for i in 0..100 {
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
    for id in &ids {
        events.get(by(event::Column::Id, *id)).await?;
    }
    let mut found = 0usize;
    // `floor`: the same keys read with one `get_many` of the handle's store
    // and decoded with flash's codec, the seal's tag cut off unchecked (the
    // bench's floor of scenario 2).
    let keys: Vec<String> = ids
        .iter()
        .map(|id| events.cache_key(&by(event::Column::Id, *id)))
        .collect::<Result<_, _>>()?;
    let store = fdb.flash().backend().clone();
    let tag = if flash::config::cache_url().starts_with("memory") {
        0
    } else {
        flash_core::seal::TAG_LEN
    };
    for _ in 0..rounds {
        if what == "floor" {
            for b in store.get_many(&keys).await?.into_iter().flatten() {
                let body = &b[..b.len() - tag];
                if let Some(flash_core::codec::EntryRef::Value { payload, .. }) =
                    flash_core::codec::decode_entry_ref(body)
                {
                    let row: Option<Option<event::Model>> =
                        flash_core::codec::decode_payload(payload);
                    found += usize::from(row.flatten().is_some());
                }
            }
            continue;
        }
        if what != "one" {
            let mut batch = fdb.flash().batch();
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    batch.add(
                        events
                            .get_query(&by(event::Column::Id, *id))
                            .expect("declared"),
                    )
                })
                .collect();
            let mut res = batch.run().await;
            for h in handles {
                found += usize::from(res.take(h)?.is_some());
            }
        }
        if what != "batch" {
            for id in &ids {
                found += usize::from(events.get(by(event::Column::Id, *id)).await.is_ok());
            }
        }
    }
    println!("{found} lookups answered");
    Ok(())
}
