//! A fixed workload for `valgrind --tool=callgrind`: batches of 100 cached
//! lookups and single hits on SQLite + the in-process cache (instruction
//! counts do not depend on machine load, so profiles are repeatable).
//!
//! ```sh
//! cargo build --release --example profile_batch
//! valgrind --tool=callgrind target/release/examples/profile_batch
//! ```
//!
//! With `PROFILE_UNTIMED=1` the handle does not time its lookups
//! (`FlashBuilder::time_lookups(false)`), to count what timing costs.
//!
//! Optional arguments: what each round runs (`both`, the default: a batch
//! of 100 and 100 single hits; `batch`; `one`) and how many rounds (200).
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
    let mut reg = Registrar::new(db).configure(|b| b.time_lookups(!untimed));
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
    for _ in 0..rounds {
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
