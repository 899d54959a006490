//! A fixed workload for `valgrind --tool=callgrind`: in-process page hits
//! (`select_related`, a participation with its event and its user) against
//! the same three rows looked up one by one, a single-row hit, and the
//! page's floor (its three entries read straight from the store and decoded,
//! keys built beforehand; `raw`: the same three reads without waiting, not
//! decoded), on SQLite and the in-process cache. The first argument picks
//! the loop (`page`, `three`, `one`, `floor`, `raw`), the second how
//! many times it runs: the difference of two
//! runs' instruction counts, divided by the difference of their counts, is
//! the cost of one operation without the set-up.
//!
//! ```sh
//! cargo build --release --example profile_page
//! valgrind --tool=callgrind target/release/examples/profile_page page 2000
//! ```

use flash::{by, Registrar};
use flash_test_kit::entities::{event, participation, user};
use sea_orm::Set;

const ROWS: i32 = 50;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("page");
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let db = flash::config::connect_database("sqlite::memory:").await?;
    flash_test_kit::schema::create_tables(&db).await?;
    let mut reg = Registrar::new(db).capture(false).outbox(false);
    flash_test_kit::declare_with_relations(&mut reg, std::time::Duration::from_secs(60))?;
    let fdb = reg.build().await?;
    for i in 0..ROWS {
        let u = fdb
            .insert(user::ActiveModel {
                username: Set(format!("u{i}")),
                name: Set("n".into()),
                ..Default::default()
            })
            .await?;
        let e = fdb
            .insert(event::ActiveModel {
                slug: Set(format!("e{i}")),
                title: Set("t".into()),
                city: Set("Oslo".into()),
                ..Default::default()
            })
            .await?;
        fdb.insert(participation::ActiveModel {
            user_id: Set(u.id),
            event_id: Set(e.id),
            role: Set("guest".into()),
            ..Default::default()
        })
        .await?;
    }
    let parts = fdb.cache::<participation::Entity>();
    let (events, users) = (fdb.cache::<event::Entity>(), fdb.cache::<user::Entity>());
    let page = parts
        .select_related::<event::Entity>()
        .and::<user::Entity>();
    // Warm every key (twice: fills land in the background).
    for _ in 0..2 {
        for id in 1..=ROWS {
            page.get(by(participation::Column::Id, id)).await?;
        }
        fdb.flash().settled().await;
    }
    // The floor's keys (participation, event, user), built before the loop.
    let mut keys = Vec::new();
    for id in 1..=ROWS {
        let p = parts.get(by(participation::Column::Id, id)).await?;
        keys.push([
            parts.cache_key(&by(participation::Column::Id, id))?,
            events.cache_key(&by(event::Column::Id, p.event_id))?,
            users.cache_key(&by(user::Column::Id, p.user_id))?,
        ]);
    }
    let backend = fdb.flash().backend().clone();
    let mut found = 0usize;
    for i in 0..n {
        let id = 1 + (i as i32 % ROWS);
        let lk = by(participation::Column::Id, id);
        match what {
            "page" => {
                let (_, e, u) = page.get(lk).await?;
                found += usize::from(e.is_some() && u.is_some());
            }
            "three" => {
                let p = parts.get(lk).await?;
                events.get(by(event::Column::Id, p.event_id)).await?;
                users.get(by(user::Column::Id, p.user_id)).await?;
                found += 1;
            }
            "floor" => {
                let [kp, ke, ku] = &keys[i % ROWS as usize];
                let p: Option<participation::Model> =
                    floor(&*backend, std::slice::from_ref(kp)).await?;
                let e: Option<event::Model> = floor(&*backend, std::slice::from_ref(ke)).await?;
                let u: Option<user::Model> = floor(&*backend, std::slice::from_ref(ku)).await?;
                found += usize::from(p.is_some() && e.is_some() && u.is_some());
            }
            "raw" => {
                let ks = &keys[i % ROWS as usize];
                found += usize::from(
                    ks.iter()
                        .all(|k| matches!(backend.get_now(k), Some(Some(_)))),
                );
            }
            _ => {
                parts.get(lk).await?;
                found += 1;
            }
        }
    }
    println!("{found} {what} lookups answered");
    Ok(())
}

/// One store read and its decode, none of flash's read path (in process: no seal).
async fn floor<T: serde::de::DeserializeOwned>(
    backend: &dyn flash_core::Backend,
    key: &[String],
) -> Result<Option<T>, Box<dyn std::error::Error>> {
    use flash_core::codec::{decode_entry_ref, decode_payload, EntryRef};
    let raw = backend.get_many(key).await?;
    let Some(bytes) = raw.into_iter().next().flatten() else {
        return Ok(None);
    };
    Ok(match decode_entry_ref(&bytes) {
        Some(EntryRef::Value { payload, .. }) => decode_payload::<Option<T>>(payload).flatten(),
        _ => None,
    })
}
