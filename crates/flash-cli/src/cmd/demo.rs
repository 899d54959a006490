//! `flash demo`: the seed's walkthrough of users, events and participations,
//! every feature of the "Miscellaneous" chapter exercised and checked, each
//! lookup printed as hit or miss and each invalidation as it happens. The
//! models and declarations come from `flash-test-kit`, shared with the tests
//! and the benchmarks.

use flash::config::{
    cache_backend, cache_url, connect_database, connect_namespace, database_url, ConfigError,
};
use flash_core::{Error, FlashBuilder, Outcome};
use flash_sea_orm::{by, Changes, FlashDb, Registrar};
use flash_test_kit::entities::{event, participation, user};
use flash_test_kit::{declare, schema, DemoClasses, DEMO_NAMESPACE};
use sea_orm::{ColumnTrait, DatabaseConnection, Set};
use std::time::Duration;

/// The demo's database for `DATABASE_URL`: its own namespace on PostgreSQL and
/// MySQL, the given file or memory on SQLite.
pub async fn connect() -> Result<DatabaseConnection, ConfigError> {
    let url = database_url();
    if url.starts_with("postgres") || url.starts_with("mysql") {
        connect_namespace(&url, DEMO_NAMESPACE, true, 8).await
    } else {
        connect_database(&url).await
    }
}

/// Connects to `DATABASE_URL` and `FLASH_CACHE_URL`, creates the tables and
/// declares the demo caches. `configure` adjusts the builder (observer, prefix).
pub async fn setup(
    configure: impl FnOnce(FlashBuilder) -> FlashBuilder,
) -> Result<(FlashDb, DemoClasses), Box<dyn std::error::Error>> {
    let db = connect().await?;
    schema::create_tables(&db).await?;
    let backend = cache_backend(&cache_url()).await?;
    let mut reg = Registrar::new(db).configure(|b| configure(b.backend_arc(backend)));
    let classes = declare(&mut reg, Duration::from_secs(60))?;
    Ok((reg.build().await?, classes))
}

fn check(cond: bool, what: &str) -> Result<(), Box<dyn std::error::Error>> {
    if cond {
        Ok(())
    } else {
        Err(format!("demo check failed: {what}").into())
    }
}

fn show<T: std::fmt::Debug>(what: &str, r: &(T, Outcome)) {
    println!("    {what:<52} -> {:<10} {:?}", r.1.label(), r.0);
}

/// Runs the walkthrough, printing every lookup (hit / miss) and invalidation.
pub async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let prefix = format!("flash-demo-{}:", std::process::id());
    // Fresh tables: ones left by an older demo may lack a column.
    schema::drop_tables(&connect().await?).await?;
    let (fdb, classes) = setup(|b| {
        b.prefix(prefix).observer(|e| {
            if let flash_core::FlashEvent::Invalidate { model, keys } = e {
                println!(
                    "      invalidated {} key(s) of {model}: {}",
                    keys.len(),
                    keys.join(", ")
                );
            }
        })
    })
    .await?;
    let db = fdb.db().clone();
    schema::clear(&db).await?;
    println!(
        "flash demo: database {}, cache {}",
        database_url(),
        cache_url()
    );

    let alice = fdb
        .insert(user::ActiveModel {
            username: Set("alice".into()),
            name: Set("Alice".into()),
            ..Default::default()
        })
        .await?;
    let bob = fdb
        .insert(user::ActiveModel {
            username: Set("bob".into()),
            name: Set("Bob".into()),
            ..Default::default()
        })
        .await?;
    let rock = fdb
        .insert(event::ActiveModel {
            slug: Set("rock-2026".into()),
            title: Set("Rock 2026".into()),
            city: Set("Oslo".into()),
            ..Default::default()
        })
        .await?;
    let jazz = fdb
        .insert(event::ActiveModel {
            slug: Set("jazz-night".into()),
            title: Set("Jazz Night".into()),
            city: Set("Oslo".into()),
            ..Default::default()
        })
        .await?;
    for (u, e) in [(alice.id, rock.id), (alice.id, jazz.id), (bob.id, rock.id)] {
        fdb.insert(participation::ActiveModel {
            user_id: Set(u),
            event_id: Set(e),
            role: Set("guest".into()),
            ..Default::default()
        })
        .await?;
    }
    // Each write above invalidated its keys before returning, and the
    // triggers also recorded it for the capture drain, which applies it again
    // within milliseconds. Applied now, so that the hit/miss lines below are
    // the same on every run.
    fdb.apply_captured().await?;

    println!("\n1. CacheMeta: Event is looked up by id and by slug");
    let events = fdb.cache::<event::Entity>();
    let r = events
        .get_with_outcome(by(event::Column::Id, rock.id))
        .await?;
    show("Event.cache.get(id=rock)", &r);
    check(r.1 == Outcome::Miss, "first get by id misses")?;
    let r = events
        .get_with_outcome(by(event::Column::Id, rock.id))
        .await?;
    show("Event.cache.get(id=rock)", &r);
    check(r.1 == Outcome::Hit, "second get by id hits")?;
    let r = events
        .get_with_outcome(by(event::Column::Slug, "rock-2026"))
        .await?;
    show("Event.cache.get(slug=rock-2026)", &r);
    let r = events
        .get_with_outcome(by(event::Column::Slug, "rock-2026"))
        .await?;
    show("Event.cache.get(slug=rock-2026)", &r);
    check(r.1 == Outcome::Hit, "get by slug hits")?;
    println!(
        "    key: {}",
        events.cache_key(&by(event::Column::Slug, "rock-2026"))?
    );
    match fdb
        .cache::<event::Entity>()
        .get(by(event::Column::Title, "x"))
        .await
    {
        Err(Error::CacheNotRegistered { .. }) => {
            println!("    Event.cache.get(title=..) -> CacheNotRegistered (no such key tuple)")
        }
        other => return Err(format!("expected CacheNotRegistered, got {other:?}").into()),
    }

    println!("\n2. Cached foreign keys: participation.event comes from Event's id cache");
    let parts = fdb.cache::<participation::Entity>();
    let r = parts
        .filter_with_outcome(by(participation::Column::UserId, alice.id))
        .await?;
    show("Participation.cache.filter(user=alice)", &(r.0.len(), r.1));
    let first = r.0.first().ok_or("alice has participations")?.clone();
    let before = fdb.flash().stats().snapshot().hits;
    let ev = fdb.follow::<event::Entity, _>(&first).await?;
    println!(
        "    participation.event                                  -> {:?}",
        ev.as_ref().map(|e| &e.slug)
    );
    check(
        fdb.flash().stats().snapshot().hits > before,
        "cached foreign key was a cache hit",
    )?;

    println!("\n3. Timeout and static version are part of each class");
    for c in fdb.flash().classes() {
        println!(
            "    {:<40} model={:<14} fields={:?} timeout={:?} version={}",
            c.name,
            c.model,
            c.key_fields,
            c.timeout.unwrap_or(fdb.flash().settings().default_timeout),
            c.version
        );
    }
    let ids = fdb
        .flash()
        .lookup(&classes.event_ids, &[alice.id.into()])
        .await?;
    show("ParticipatedEventIdListCacheOnUser(user=alice) [v2]", &ids);
    println!(
        "    key: {}",
        fdb.flash().key_of(&classes.event_ids, &[alice.id.into()])?
    );

    fdb.apply_captured().await?; // (see the note after the setup)
    println!("\n4. Dynamic version: bump after a schema change, old values count as stale");
    let bumped = fdb.flash().bump_version_for_model("event").await?;
    println!("    bumped {bumped:?}");
    let r = events
        .get_with_outcome(by(event::Column::Id, rock.id))
        .await?;
    show("Event.cache.get(id=rock) after bump", &r);
    check(r.1 == Outcome::Miss, "bumped version refetches")?;
    let r = events
        .get_with_outcome(by(event::Column::Id, rock.id))
        .await?;
    show("Event.cache.get(id=rock)", &r);
    check(r.1 == Outcome::Hit, "refilled value hits")?;

    println!("\n5. Invalidation (UNSET): renaming a slug invalidates the old and the new slug");
    let renamed = fdb
        .update(event::ActiveModel {
            id: Set(rock.id),
            slug: Set("rock-2026-oslo".into()),
            ..Default::default()
        })
        .await?;
    let r = events
        .get_or_none(by(event::Column::Slug, "rock-2026"))
        .await?;
    println!(
        "    Event.cache.get_or_none(slug=rock-2026)               -> {:?}",
        r.as_ref().map(|e| &e.slug)
    );
    check(r.is_none(), "old slug is gone")?;
    let r = events
        .get_with_outcome(by(event::Column::Slug, "rock-2026-oslo"))
        .await?;
    show(
        "Event.cache.get(slug=rock-2026-oslo)",
        &(r.0.as_ref().map(|e| e.title.clone()), r.1),
    );
    check(
        r.0.as_ref().map(|e| e.id) == Some(renamed.id),
        "new slug found",
    )?;

    println!(
        "\n   Moving a participation to another user invalidates both users' lists and counts"
    );
    let c = fdb
        .flash()
        .lookup(&classes.participation_count, &[bob.id.into()])
        .await?;
    show("ParticipationCountOnUser(user=bob)", &c);
    fdb.flash()
        .lookup(&classes.participation_count, &[alice.id.into()])
        .await?;
    fdb.update(participation::ActiveModel {
        id: Set(first.id),
        user_id: Set(bob.id),
        ..Default::default()
    })
    .await?;
    let a = fdb
        .flash()
        .lookup(&classes.participation_count, &[alice.id.into()])
        .await?;
    let b = fdb
        .flash()
        .lookup(&classes.participation_count, &[bob.id.into()])
        .await?;
    show("ParticipationCountOnUser(user=alice)", &a);
    show("ParticipationCountOnUser(user=bob)", &b);
    check(a.0 == 1 && b.0 == 2, "counts follow the move")?;

    println!("\n   update_many and delete_many invalidate every affected row");
    let n = fdb
        .update_many::<event::Entity>(
            sea_orm::Condition::all().add(event::Column::City.eq("Oslo")),
            Changes::new()
                .set(event::Column::Title, "Moved to Bergen")
                .set(event::Column::City, "Bergen"),
        )
        .await?;
    println!("    update_many(city=Oslo -> Bergen) updated {n} rows");
    let r = events
        .get_with_outcome(by(event::Column::Slug, "jazz-night"))
        .await?;
    show(
        "Event.cache.get(slug=jazz-night)",
        &(r.0.as_ref().map(|e| e.city.clone()), r.1),
    );
    check(
        r.0.as_ref().map(|e| e.city.as_str()) == Some("Bergen"),
        "update_many visible",
    )?;

    println!("\n6. DYNAMIC + allowtime: a stale count is served within the allowtime, one caller refreshes after it");
    let r = fdb
        .flash()
        .lookup(&classes.events_in_city, &["Bergen".into()])
        .await?;
    show("EventCountOnCity(Bergen)", &r);
    fdb.insert(event::ActiveModel {
        slug: Set("folk".into()),
        title: Set("Folk".into()),
        city: Set("Bergen".into()),
        ..Default::default()
    })
    .await?;
    let r2 = fdb
        .flash()
        .lookup(&classes.events_in_city, &["Bergen".into()])
        .await?;
    show(
        "EventCountOnCity(Bergen) after insert, within allowtime",
        &r2,
    );
    check(
        r2.0 == r.0 && r2.1 == Outcome::Hit,
        "allowtime serves the old count",
    )?;

    fdb.apply_captured().await?; // (see the note after the setup)
    println!("\n7. Manual invalidation: invalidate_flash_cache() on a filter");
    let keys = fdb
        .invalidate_flash_cache::<event::Entity>(
            sea_orm::Condition::all().add(event::Column::Id.eq(jazz.id)),
        )
        .await?;
    println!("    invalidated {} key(s)", keys.len());
    let r = events
        .get_with_outcome(by(event::Column::Id, jazz.id))
        .await?;
    show(
        "Event.cache.get(id=jazz)",
        &(r.0.as_ref().map(|e| e.slug.clone()), r.1),
    );
    check(r.1 == Outcome::Miss, "manually invalidated key misses")?;

    println!("\n8. Batch: three lookups of three classes, one cache round trip (explicit, then through a request scope)");
    let flash = fdb.flash();
    let mut batch = flash.batch();
    let hu = batch.add(
        fdb.cache::<user::Entity>()
            .get_query(&by(user::Column::Id, alice.id))?,
    );
    let he = batch.add(events.get_query(&by(event::Column::Id, jazz.id))?);
    let hp = batch.add(parts.filter_query(&by(participation::Column::UserId, bob.id))?);
    let mut res = batch.run().await;
    println!("    user  -> {:?}", res.take(hu)?.map(|u| u.username));
    println!("    event -> {:?}", res.take(he)?.map(|e| e.slug));
    println!("    participations of bob -> {}", res.take(hp)?.len());
    // The async variant: lookups started together through one request are
    // batched by themselves, and each key is read once per request.
    let req = fdb.request();
    let (u, e, has) = tokio::join!(
        req.cache::<user::Entity>()
            .get(by(user::Column::Id, alice.id)),
        req.cache::<event::Entity>()
            .get(by(event::Column::Id, jazz.id)),
        req.cache::<participation::Entity>()
            .exists(by(participation::Column::EventId, jazz.id)),
    );
    println!(
        "    request scope, joined: user {}, event {}, has participants: {}; {} keys kept for the request",
        u?.username,
        e?.slug,
        has?,
        req.scope().memoised()
    );
    check(
        req.scope().memoised() == 3,
        "the request kept its three answers",
    )?;

    println!("\n9. Deleting a row caches its absence after invalidation");
    fdb.delete::<event::Entity>(&renamed).await?;
    match events.get(by(event::Column::Id, renamed.id)).await {
        Err(e) if e.is_not_found() => println!("    Event.cache.get(id=rock) -> NotFound"),
        other => return Err(format!("expected NotFound, got {other:?}").into()),
    }

    let s = fdb.flash().stats().snapshot();
    println!(
        "\nstats: {} hits, {} stale hits, {} misses, {} fills, {} database fetches, {} keys invalidated, {} cache errors",
        s.hits, s.stale_hits, s.misses, s.fills, s.db_fetches, s.invalidated_keys, s.backend_errors
    );
    schema::clear(&db).await?;
    Ok(())
}
