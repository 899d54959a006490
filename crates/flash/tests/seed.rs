//! The seed chapter, feature by feature, on DATABASE_URL (SQLite by default)
//! and FLASH_CACHE_URL (in-process by default).

mod common;

use common::*;
use flash_core::durations::{CACHE_TIME_DAY, CACHE_TIME_WEEK};
use flash_core::{ClassSpec, Error, Invalidation, Outcome, RegistryError};
use flash_sea_orm::{by, CacheMeta, Changes, Registrar};
use flash_test_kit::entities::{event, participation, user};
use flash_test_kit::Op;
use sea_orm::{ColumnTrait, Condition, Set};
use std::time::Duration;

#[tokio::test]
async fn cache_meta_get_by_id_and_by_slug_hits_after_one_query() {
    let h = quiet_harness().await;
    let e = add_event(&h.fdb, "rock", "Oslo").await;
    h.take_queries();
    let events = h.fdb.cache::<event::Entity>();
    let (row, o) = events
        .get_with_outcome(by(event::Column::Slug, "rock"))
        .await
        .unwrap();
    assert_eq!((row.as_ref(), o), (Some(&e), Outcome::Miss));
    assert_eq!(
        h.take_queries(),
        1,
        "a miss queries the database exactly once"
    );
    let (row, o) = events
        .get_with_outcome(by(event::Column::Slug, "rock"))
        .await
        .unwrap();
    assert_eq!((row.as_ref(), o), (Some(&e), Outcome::Hit));
    assert_eq!(events.get(by(event::Column::Id, e.id)).await.unwrap(), e);
    h.take_queries();
    assert_eq!(events.get(by(event::Column::Id, e.id)).await.unwrap(), e);
    assert_eq!(h.take_queries(), 0, "a hit does not touch the database");
}

#[tokio::test]
async fn missing_row_is_not_found_and_its_absence_is_cached() {
    let h = quiet_harness().await;
    let events = h.fdb.cache::<event::Entity>();
    let err = events
        .get(by(event::Column::Slug, "nope"))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        err.to_string().contains("event") && err.to_string().contains("nope"),
        "{err}"
    );
    assert_eq!(h.take_queries(), 1);
    assert!(events
        .get_or_none(by(event::Column::Slug, "nope"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(h.take_queries(), 0, "the absence was served from the cache");
    // Creating the row invalidates the cached absence.
    add_event(&h.fdb, "nope", "Oslo").await;
    assert_eq!(
        events
            .get(by(event::Column::Slug, "nope"))
            .await
            .unwrap()
            .slug,
        "nope"
    );
}

#[tokio::test]
async fn undeclared_tuple_is_cache_not_registered_naming_model_and_fields() {
    let h = quiet_harness().await;
    match h
        .fdb
        .cache::<event::Entity>()
        .get(by(event::Column::Title, "x"))
        .await
    {
        Err(Error::CacheNotRegistered { model, fields, .. }) => {
            assert_eq!(model, "event");
            assert_eq!(fields, vec!["title".to_string()]);
        }
        other => panic!("expected CacheNotRegistered, got {other:?}"),
    }
    // A declared instance tuple is not a filter tuple.
    assert!(matches!(
        h.fdb
            .cache::<event::Entity>()
            .filter(by(event::Column::Slug, "x"))
            .await,
        Err(Error::CacheNotRegistered {
            kind: "queryset",
            ..
        })
    ));
}

#[tokio::test]
async fn multi_field_lookup_accepts_fields_in_any_order() {
    let h = quiet_harness().await;
    let u = add_user(&h.fdb, "ann").await;
    let e = add_event(&h.fdb, "fest", "Oslo").await;
    let p = add_participation(&h.fdb, u.id, e.id).await;
    let parts = h.fdb.cache::<participation::Entity>();
    let a = by(participation::Column::UserId, u.id).and(participation::Column::EventId, e.id);
    let b = by(participation::Column::EventId, e.id).and(participation::Column::UserId, u.id);
    assert_eq!(parts.cache_key(&a).unwrap(), parts.cache_key(&b).unwrap());
    assert_eq!(parts.get(b).await.unwrap(), p);
}

#[tokio::test]
async fn declaration_errors_are_reported_at_registration() {
    let queries = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let db = fresh_db(queries).await;
    // A key tuple declared twice (merge of two declarations).
    let a = CacheMeta::<event::Entity>::new().get_key([event::Column::Slug]);
    let b = CacheMeta::<event::Entity>::new().get_key([event::Column::Slug]);
    assert!(matches!(
        a.merge(b),
        Err(RegistryError::DuplicateKeyTuple { .. })
    ));
    // A setting declared in both.
    let a = CacheMeta::<event::Entity>::new().timeout(CACHE_TIME_DAY);
    let b = CacheMeta::<event::Entity>::new().timeout(CACHE_TIME_DAY);
    assert!(a.merge(b).is_err());
    // Two registrations of one tuple.
    let mut reg = Registrar::new(db.clone());
    reg.entity(CacheMeta::<event::Entity>::new().get_key([event::Column::Slug]))
        .unwrap();
    let err = reg
        .entity(CacheMeta::<event::Entity>::new().get_key([event::Column::Slug]))
        .err()
        .expect("duplicate rejected");
    assert!(
        matches!(
            err,
            RegistryError::DuplicateClass { .. } | RegistryError::DuplicateKeyTuple { .. }
        ),
        "{err}"
    );
    // A duplicate class name.
    let mut reg = Registrar::new(db.clone());
    reg.custom(TitleBySlug(ClassSpec::instance("T", "event", &["slug"])))
        .unwrap();
    assert!(matches!(
        reg.custom(TitleBySlug(ClassSpec::instance("T", "event", &["slug"])))
            .unwrap_err(),
        RegistryError::DuplicateClass { name, .. } if name == "T"
    ));
    // A cached foreign key whose target has no primary-key instance cache.
    let mut reg = Registrar::new(db.clone());
    reg.entity(CacheMeta::<event::Entity>::new().get_key([event::Column::Slug]))
        .unwrap();
    reg.entity(
        CacheMeta::<participation::Entity>::new()
            .cached_fk::<event::Entity>(participation::Column::EventId),
    )
    .unwrap();
    match reg.build().await {
        Err(Error::Registry(RegistryError::CachedForeignKeyWithoutTarget { target, .. })) => {
            assert_eq!(target, "event")
        }
        other => panic!("expected CachedForeignKeyWithoutTarget, got {other:?}"),
    }
    // Hostile class names.
    let mut reg = Registrar::new(db);
    assert!(matches!(
        reg.custom(TitleBySlug(ClassSpec::instance("a__b", "event", &["slug"]))),
        Err(RegistryError::InvalidName { .. })
    ));
    assert!(matches!(
        reg.custom(TitleBySlug(ClassSpec::instance(
            "sp ace",
            "event",
            &["slug"]
        ))),
        Err(RegistryError::InvalidName { .. })
    ));
}

#[tokio::test]
async fn cached_foreign_key_reads_through_the_target_pk_cache() {
    let h = quiet_harness().await;
    let u = add_user(&h.fdb, "cy").await;
    let e = add_event(&h.fdb, "expo", "Oslo").await;
    let p = add_participation(&h.fdb, u.id, e.id).await;
    h.settle().await;
    h.fdb
        .cache::<event::Entity>()
        .get(by(event::Column::Id, e.id))
        .await
        .unwrap();
    h.take_queries();
    let got = h.fdb.follow::<event::Entity, _>(&p).await.unwrap();
    assert_eq!(got, Some(e.clone()));
    assert_eq!(
        h.take_queries(),
        0,
        "participation.event came from Event's id cache"
    );
    assert_eq!(h.fdb.follow::<user::Entity, _>(&p).await.unwrap(), Some(u));
    // A relation that is not declared as cached.
    assert!(matches!(
        h.fdb.follow::<participation::Entity, _>(&e).await,
        Err(Error::CacheNotRegistered { .. })
    ));
}

#[tokio::test]
async fn timeout_expires_values_and_defaults_to_a_week() {
    let (h, short) = quiet_harness_with(
        |b| b,
        |reg| {
            reg.custom(TitleBySlug(
                ClassSpec::instance("ShortTitle", "event", &["slug"])
                    .timeout(Duration::from_secs(1)),
            ))
            .unwrap()
        },
    )
    .await;
    assert_eq!(h.fdb.flash().settings().default_timeout, CACHE_TIME_WEEK);
    add_event(&h.fdb, "t1", "Oslo").await;
    h.settle().await;
    let f = h.fdb.flash();
    assert_eq!(
        f.lookup(&short, &["t1".into()]).await.unwrap().1,
        Outcome::Miss
    );
    assert_eq!(
        f.lookup(&short, &["t1".into()]).await.unwrap().1,
        Outcome::Hit
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        f.lookup(&short, &["t1".into()]).await.unwrap().1,
        Outcome::Miss,
        "expired after its timeout"
    );
}

#[tokio::test]
async fn static_version_is_in_the_key() {
    let (h, (v0, v3)) = quiet_harness_with(
        |b| b,
        |reg| {
            (
                reg.custom(TitleBySlug(ClassSpec::instance(
                    "VTitle",
                    "event",
                    &["slug"],
                )))
                .unwrap(),
                reg.custom(TitleBySlug(
                    ClassSpec::instance("VTitle3", "event", &["slug"]).version(3),
                ))
                .unwrap(),
            )
        },
    )
    .await;
    let f = h.fdb.flash();
    assert!(f.key_of(&v0, &["a".into()]).unwrap().ends_with("__v0"));
    assert!(f.key_of(&v3, &["a".into()]).unwrap().ends_with("__v3"));
    assert!(f
        .key_of(&h.classes.event_ids, &[1.into()])
        .unwrap()
        .ends_with("__v2"));
}

#[tokio::test]
async fn dynamic_version_bump_makes_old_values_stale() {
    let h = quiet_harness().await;
    let e = add_event(&h.fdb, "dv", "Oslo").await;
    let events = h.fdb.cache::<event::Entity>();
    events.get(by(event::Column::Id, e.id)).await.unwrap();
    assert_eq!(
        events
            .get_with_outcome(by(event::Column::Id, e.id))
            .await
            .unwrap()
            .1,
        Outcome::Hit
    );
    let before = h.fdb.flash().dynamic_version("event_by_id");
    let bumped = h.fdb.flash().bump_version_for_model("event").await.unwrap();
    assert!(
        bumped.contains(&"event_by_id".to_string())
            && bumped.contains(&"event_by_slug".to_string())
    );
    assert!(
        !bumped.contains(&"user_by_id".to_string()),
        "only the model's classes"
    );
    assert_eq!(h.fdb.flash().dynamic_version("event_by_id"), before + 1);
    h.take_queries();
    assert_eq!(
        events
            .get_with_outcome(by(event::Column::Id, e.id))
            .await
            .unwrap()
            .1,
        Outcome::Miss,
        "old value is stale after the bump"
    );
    assert_eq!(h.take_queries(), 1);
    assert_eq!(
        events
            .get_with_outcome(by(event::Column::Id, e.id))
            .await
            .unwrap()
            .1,
        Outcome::Hit
    );
    assert!(matches!(
        h.fdb.flash().bump_version_for_model("nosuch").await,
        Err(Error::Registry(RegistryError::UnknownModel(_)))
    ));
}

#[tokio::test]
async fn unset_invalidation_on_slug_rename_invalidates_old_and_new_slug() {
    let h = quiet_harness().await;
    let e = add_event(&h.fdb, "old-slug", "Oslo").await;
    let events = h.fdb.cache::<event::Entity>();
    events
        .get(by(event::Column::Slug, "old-slug"))
        .await
        .unwrap();
    assert!(
        events
            .get_or_none(by(event::Column::Slug, "new-slug"))
            .await
            .unwrap()
            .is_none(),
        "absence of the new slug cached"
    );
    events.get(by(event::Column::Id, e.id)).await.unwrap();
    h.fdb
        .update(event::ActiveModel {
            id: Set(e.id),
            slug: Set("new-slug".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        events
            .get_or_none(by(event::Column::Slug, "old-slug"))
            .await
            .unwrap()
            .is_none(),
        "old slug invalidated"
    );
    assert_eq!(
        events
            .get(by(event::Column::Slug, "new-slug"))
            .await
            .unwrap()
            .id,
        e.id,
        "new slug invalidated"
    );
    assert_eq!(
        events.get(by(event::Column::Id, e.id)).await.unwrap().slug,
        "new-slug"
    );
}

#[tokio::test]
async fn moving_a_participation_invalidates_both_users_lists_and_counts() {
    let h = quiet_harness().await;
    let (a, b) = (add_user(&h.fdb, "a").await, add_user(&h.fdb, "b").await);
    let e = add_event(&h.fdb, "m", "Oslo").await;
    let p = add_participation(&h.fdb, a.id, e.id).await;
    let parts = h.fdb.cache::<participation::Entity>();
    let f = h.fdb.flash();
    assert_eq!(
        parts
            .filter(by(participation::Column::UserId, a.id))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        parts
            .filter(by(participation::Column::UserId, b.id))
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        f.get(&h.classes.participation_count, &[a.id.into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        f.get(&h.classes.participation_count, &[b.id.into()])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.get(&h.classes.event_ids, &[b.id.into()]).await.unwrap(),
        Vec::<i32>::new()
    );
    h.fdb
        .update(participation::ActiveModel {
            id: Set(p.id),
            user_id: Set(b.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        parts
            .filter(by(participation::Column::UserId, a.id))
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        parts
            .filter(by(participation::Column::UserId, b.id))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        f.get(&h.classes.participation_count, &[a.id.into()])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.get(&h.classes.participation_count, &[b.id.into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        f.get(&h.classes.event_ids, &[b.id.into()]).await.unwrap(),
        vec![e.id]
    );
}

#[tokio::test]
async fn update_many_delete_many_save_and_delete_invalidate() {
    let h = quiet_harness().await;
    let e1 = add_event(&h.fdb, "u1", "Oslo").await;
    let e2 = add_event(&h.fdb, "u2", "Oslo").await;
    let events = h.fdb.cache::<event::Entity>();
    for e in [&e1, &e2] {
        events.get(by(event::Column::Id, e.id)).await.unwrap();
        events
            .get(by(event::Column::Slug, e.slug.clone()))
            .await
            .unwrap();
    }
    let n = h
        .fdb
        .update_many::<event::Entity>(
            Condition::all().add(event::Column::City.eq("Oslo")),
            Changes::new().set(event::Column::Title, "T2"),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        events
            .get(by(event::Column::Id, e1.id))
            .await
            .unwrap()
            .title,
        "T2"
    );
    assert_eq!(
        events
            .get(by(event::Column::Slug, "u2"))
            .await
            .unwrap()
            .title,
        "T2"
    );
    // update_many changing a key field invalidates old and new slugs.
    h.fdb
        .update_many::<event::Entity>(
            Condition::all().add(event::Column::Id.eq(e1.id)),
            Changes::new().set(event::Column::Slug, "u1b"),
        )
        .await
        .unwrap();
    assert!(events
        .get_or_none(by(event::Column::Slug, "u1"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        events.get(by(event::Column::Slug, "u1b")).await.unwrap().id,
        e1.id
    );
    // save() updates when the primary key is set.
    let mut am: event::ActiveModel = e2.clone().into();
    am.title = Set("saved".into());
    h.fdb.save(am).await.unwrap();
    assert_eq!(
        events
            .get(by(event::Column::Id, e2.id))
            .await
            .unwrap()
            .title,
        "saved"
    );
    // delete_many
    assert_eq!(
        h.fdb
            .delete_many::<event::Entity>(Condition::all().add(event::Column::Id.eq(e1.id)))
            .await
            .unwrap(),
        1
    );
    assert!(events
        .get_or_none(by(event::Column::Id, e1.id))
        .await
        .unwrap()
        .is_none());
    assert!(events
        .get_or_none(by(event::Column::Slug, "u1b"))
        .await
        .unwrap()
        .is_none());
    // delete
    h.fdb.delete::<event::Entity>(&e2).await.unwrap();
    assert!(events
        .get_or_none(by(event::Column::Slug, "u2"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn invalidation_off_leaves_values_until_timeout() {
    let (h, off) = quiet_harness_with(
        |b| b,
        |reg| {
            reg.custom(TitleBySlug(
                ClassSpec::instance("OffTitle", "event", &["slug"]).invalidation(Invalidation::Off),
            ))
            .unwrap()
        },
    )
    .await;
    let e = add_event(&h.fdb, "off", "Oslo").await;
    let f = h.fdb.flash();
    assert_eq!(
        f.get(&off, &["off".into()]).await.unwrap().as_deref(),
        Some("Title of off")
    );
    h.fdb
        .update(event::ActiveModel {
            id: Set(e.id),
            title: Set("changed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let (v, o) = f.lookup(&off, &["off".into()]).await.unwrap();
    assert_eq!(
        (v.as_deref(), o),
        (Some("Title of off"), Outcome::Hit),
        "OFF: writes do not invalidate"
    );
}

#[tokio::test]
async fn invalidation_dynamic_keeps_the_value_and_refreshes_on_read() {
    let (h, dynamic) = quiet_harness_with(
        |b| b,
        |reg| {
            reg.custom(TitleBySlug(
                ClassSpec::instance("DynTitle", "event", &["slug"])
                    .invalidation(Invalidation::Dynamic),
            ))
            .unwrap()
        },
    )
    .await;
    let e = add_event(&h.fdb, "dyn", "Oslo").await;
    h.settle().await;
    let f = h.fdb.flash();
    f.get(&dynamic, &["dyn".into()]).await.unwrap();
    assert_eq!(
        f.lookup(&dynamic, &["dyn".into()]).await.unwrap().1,
        Outcome::Hit
    );
    h.fdb
        .update(event::ActiveModel {
            id: Set(e.id),
            title: Set("changed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    h.settle().await;
    // The value is still in the cache, beside a stale marker.
    let key = f.key_of(&dynamic, &["dyn".into()]).unwrap();
    let raw = h
        .backend
        .inner()
        .get_many(&[key.clone(), format!("{key}__stale")])
        .await
        .unwrap();
    assert!(
        raw[0].is_some() && raw[1].is_some(),
        "DYNAMIC keeps the value and sets a marker"
    );
    let (v, o) = f.lookup(&dynamic, &["dyn".into()]).await.unwrap();
    assert_eq!((v.as_deref(), o), (Some("changed"), Outcome::Miss));
    assert_eq!(
        f.lookup(&dynamic, &["dyn".into()]).await.unwrap(),
        (Some("changed".into()), Outcome::Hit),
        "marker cleared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowtime_serves_stale_then_one_caller_refreshes() {
    let (h, allow) = quiet_harness_with(
        |b| b,
        |reg| {
            reg.custom(TitleBySlug(
                ClassSpec::instance("AllowTitle", "event", &["slug"])
                    .invalidation(Invalidation::Dynamic)
                    .allowtime(Duration::from_millis(800)),
            ))
            .unwrap()
        },
    )
    .await;
    let e = add_event(&h.fdb, "al", "Oslo").await;
    let f = h.fdb.flash().clone();
    f.get(&allow, &["al".into()]).await.unwrap();
    h.fdb
        .update(event::ActiveModel {
            id: Set(e.id),
            title: Set("new".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        f.lookup(&allow, &["al".into()]).await.unwrap(),
        (Some("Title of al".into()), Outcome::Hit),
        "within allowtime: stale is served"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    let before = f.stats().snapshot().db_fetches;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (f, allow) = (f.clone(), allow.clone());
            tokio::spawn(async move { f.lookup(&allow, &["al".into()]).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(
        f.stats().snapshot().db_fetches - before,
        1,
        "one caller refreshed under the write lock"
    );
    assert_eq!(
        outcomes.iter().filter(|(_, o)| *o == Outcome::Miss).count(),
        1,
        "{outcomes:?}"
    );
    for (v, o) in &outcomes {
        // Losers of the write lock serve the old value; the rest see the refresh.
        let want = if *o == Outcome::StaleHit {
            "Title of al"
        } else {
            "new"
        };
        assert_eq!(v.as_deref(), Some(want), "{outcomes:?}");
    }
    assert_eq!(
        f.lookup(&allow, &["al".into()]).await.unwrap().0.as_deref(),
        Some("new")
    );
}

#[tokio::test]
async fn decision_rows_with_allowtime_passed_refresh() {
    // Row 4: OFF with allowtime passed refreshes under the write lock.
    // Row 6: UNSET with allowtime passed refetches and overwrites.
    let (h, (off, unset)) = quiet_harness_with(
        |b| b,
        |reg| {
            (
                reg.custom(TitleBySlug(
                    ClassSpec::instance("OffAllow", "event", &["slug"])
                        .invalidation(Invalidation::Off)
                        .allowtime(Duration::from_millis(300)),
                ))
                .unwrap(),
                reg.custom(TitleBySlug(
                    ClassSpec::instance("UnsetAllow", "event", &["slug"])
                        .allowtime(Duration::from_millis(300)),
                ))
                .unwrap(),
            )
        },
    )
    .await;
    add_event(&h.fdb, "r", "Oslo").await;
    let f = h.fdb.flash();
    for c in [&off, &unset] {
        assert_eq!(f.lookup(c, &["r".into()]).await.unwrap().1, Outcome::Miss);
        assert_eq!(
            f.lookup(c, &["r".into()]).await.unwrap().1,
            Outcome::Hit,
            "row 1: young value served"
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for c in [&off, &unset] {
        assert_eq!(
            f.lookup(c, &["r".into()]).await.unwrap().1,
            Outcome::Miss,
            "{}: refreshed after allowtime",
            c.name()
        );
        assert_eq!(f.lookup(c, &["r".into()]).await.unwrap().1, Outcome::Hit);
    }
}

#[tokio::test]
async fn decision_row2_version_change_per_invalidation_type() {
    let (h, (off, dynamic)) = quiet_harness_with(
        |b| b,
        |reg| {
            (
                reg.custom(TitleBySlug(
                    ClassSpec::instance("OffV", "event", &["slug"]).invalidation(Invalidation::Off),
                ))
                .unwrap(),
                reg.custom(TitleBySlug(
                    ClassSpec::instance("DynV", "event", &["slug"])
                        .invalidation(Invalidation::Dynamic),
                ))
                .unwrap(),
            )
        },
    )
    .await;
    add_event(&h.fdb, "v", "Oslo").await;
    let f = h.fdb.flash();
    for c in [&off, &dynamic] {
        f.get(c, &["v".into()]).await.unwrap();
    }
    f.bump_version_for_model("event").await.unwrap();
    for c in [&off, &dynamic] {
        assert_eq!(
            f.lookup(c, &["v".into()]).await.unwrap().1,
            Outcome::Miss,
            "{}: the write-lock winner refreshes",
            c.name()
        );
        assert_eq!(f.lookup(c, &["v".into()]).await.unwrap().1, Outcome::Hit);
    }
}

#[tokio::test]
async fn manual_invalidation_of_a_filter() {
    let h = quiet_harness().await;
    let e = add_event(&h.fdb, "man", "Oslo").await;
    let events = h.fdb.cache::<event::Entity>();
    events.get(by(event::Column::Slug, "man")).await.unwrap();
    // A write that bypassed flash: the cache cannot know.
    use sea_orm::{ActiveModelTrait, EntityTrait};
    event::ActiveModel {
        id: Set(e.id),
        title: Set("raw".into()),
        ..Default::default()
    }
    .update(&h.db)
    .await
    .unwrap();
    assert_eq!(
        events
            .get(by(event::Column::Slug, "man"))
            .await
            .unwrap()
            .title,
        "Title of man"
    );
    let keys = h
        .fdb
        .invalidate_flash_cache::<event::Entity>(
            Condition::all().add(event::Column::City.eq("Oslo")),
        )
        .await
        .unwrap();
    assert!(
        keys.unset.iter().any(|k| k.contains("event_by_slug__man")),
        "{keys:?}"
    );
    assert_eq!(
        events
            .get(by(event::Column::Slug, "man"))
            .await
            .unwrap()
            .title,
        "raw"
    );
    let _ = event::Entity::find();
}

#[tokio::test]
async fn bypass_reads_the_database_and_writes_nothing_to_the_cache() {
    let (h, _) = quiet_harness_with(|b| b.bypass(true), |_| ()).await;
    let e = add_event(&h.fdb, "by", "Oslo").await;
    h.settle().await;
    let events = h.fdb.cache::<event::Entity>();
    let writes = h.backend.writes();
    h.take_queries();
    for _ in 0..3 {
        assert_eq!(
            events
                .get_with_outcome(by(event::Column::Id, e.id))
                .await
                .unwrap()
                .1,
            Outcome::Bypass
        );
    }
    assert_eq!(h.take_queries(), 3);
    assert_eq!(h.backend.writes(), writes, "no cache writes");
    assert_eq!(h.backend.calls(Op::GetMany), 0, "no cache reads");
    h.fdb.flash().set_bypass(false);
    assert_eq!(
        events
            .get_with_outcome(by(event::Column::Id, e.id))
            .await
            .unwrap()
            .1,
        Outcome::Miss
    );
}

#[tokio::test]
async fn database_alias_and_prefix_are_in_the_key() {
    let (h, _) =
        quiet_harness_with(|b| b.db_alias("event", "replica").prefix("ns1:"), |_| ()).await;
    let key = h
        .fdb
        .cache::<event::Entity>()
        .cache_key(&by(event::Column::Id, 1))
        .unwrap();
    assert_eq!(key, "ns1:i__replica__event_by_id__1__v0");
    let ukey = h
        .fdb
        .cache::<user::Entity>()
        .cache_key(&by(user::Column::Id, 1))
        .unwrap();
    assert_eq!(ukey, "ns1:i__default__user_by_id__1__v0");
}

#[tokio::test]
async fn corrupt_cache_bytes_are_a_miss_and_get_refilled() {
    let h = quiet_harness().await;
    let e = add_event(&h.fdb, "cor", "Oslo").await;
    let events = h.fdb.cache::<event::Entity>();
    let key = events.cache_key(&by(event::Column::Id, e.id)).unwrap();
    let good = {
        events.get(by(event::Column::Id, e.id)).await.unwrap();
        // The fill runs after the lookup returned.
        h.fdb.flash().settled().await;
        h.backend
            .inner()
            .get_many(std::slice::from_ref(&key))
            .await
            .unwrap()[0]
            .as_deref()
            .map(<[u8]>::to_vec)
            .unwrap()
    };
    let garbage: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        vec![],
        good[..good.len() / 2].to_vec(),
        {
            let mut old = good.clone();
            old[1] = 0; // an older layout
            old
        },
        {
            let mut flipped = good.clone();
            let n = flipped.len();
            flipped[n - 3] ^= 0xff;
            flipped
        },
    ];
    for bytes in garbage {
        h.backend
            .inner()
            .set(&key, &bytes, Duration::from_secs(60))
            .await
            .unwrap();
        let (row, _) = events
            .get_with_outcome(by(event::Column::Id, e.id))
            .await
            .unwrap();
        assert_eq!(row.as_ref().map(|r| r.id), Some(e.id));
        assert_eq!(
            events
                .get_with_outcome(by(event::Column::Id, e.id))
                .await
                .unwrap()
                .1,
            Outcome::Hit,
            "refilled"
        );
    }
}

#[tokio::test]
async fn batch_resolves_many_classes_in_one_round_trip() {
    let h = quiet_harness().await;
    let u = add_user(&h.fdb, "bat").await;
    let e = add_event(&h.fdb, "bat", "Oslo").await;
    add_participation(&h.fdb, u.id, e.id).await;
    let f = h.fdb.flash();
    let run = || async {
        let mut batch = f.batch();
        let hu = batch.add(
            h.fdb
                .cache::<user::Entity>()
                .get_query(&by(user::Column::Id, u.id))
                .unwrap(),
        );
        let he = batch.add(
            h.fdb
                .cache::<event::Entity>()
                .get_query(&by(event::Column::Slug, "bat"))
                .unwrap(),
        );
        let hp = batch.add(
            h.fdb
                .cache::<participation::Entity>()
                .filter_query(&by(participation::Column::UserId, u.id))
                .unwrap(),
        );
        let hc = batch.add(f.query(&h.classes.participation_count, vec![u.id.into()]));
        let mut r = batch.run().await;
        (
            r.take_with_outcome(hu).unwrap(),
            r.take_with_outcome(he).unwrap(),
            r.take_with_outcome(hp).unwrap(),
            r.take_with_outcome(hc).unwrap(),
        )
    };
    // The inserts' captured records are applied (a second invalidation of
    // keys nobody read yet) before the counting starts.
    h.fdb.apply_captured().await.unwrap();
    let calls = || h.backend.calls(Op::GetMany);
    let first = run().await;
    assert_eq!(first.0 .1, Outcome::Miss);
    let before = calls();
    h.take_queries();
    let second = run().await;
    assert_eq!(calls() - before, 1, "one get_many for four queries");
    assert_eq!(h.take_queries(), 0);
    assert_eq!(second.0, (Some(u.clone()), Outcome::Hit));
    assert_eq!(second.1 .0.map(|x| x.id), Some(e.id));
    assert_eq!(second.2 .0.len(), 1);
    assert_eq!(second.3, (1, Outcome::Hit));

    // Cache only: misses are errors in the results, nothing touches the database.
    let mut batch = f.batch().cache_only();
    let hit = batch.add(
        h.fdb
            .cache::<user::Entity>()
            .get_query(&by(user::Column::Id, u.id))
            .unwrap(),
    );
    let miss = batch.add(
        h.fdb
            .cache::<user::Entity>()
            .get_query(&by(user::Column::Id, 999_999))
            .unwrap(),
    );
    let mut r = batch.run().await;
    assert_eq!(r.error_count(), 1);
    assert!(matches!(r.first_error(), Some(Error::NotCached(_))));
    assert_eq!(h.take_queries(), 0);
    assert_eq!(r.take(hit).unwrap(), Some(u));
    assert!(r.take_or_none(miss).is_none(), "none on error");
}

#[tokio::test]
async fn transaction_invalidates_after_commit_and_not_on_rollback() {
    let h = quiet_harness().await;
    let e = add_event(&h.fdb, "tx", "Oslo").await;
    h.settle().await;
    let events = h.fdb.cache::<event::Entity>();
    events.get(by(event::Column::Slug, "tx")).await.unwrap();
    let invalidated = || h.fdb.flash().stats().snapshot().invalidated_keys;
    let before = invalidated();
    let r: Result<(), Error> = h
        .fdb
        .transaction(|tx| {
            Box::pin(async move {
                tx.update(event::ActiveModel {
                    id: Set(e.id),
                    title: Set("rolled back".into()),
                    ..Default::default()
                })
                .await?;
                Err(Error::NotCached("abort".into()))
            })
        })
        .await;
    assert!(r.is_err());
    assert_eq!(invalidated(), before, "nothing invalidated on rollback");
    assert_eq!(
        events
            .get_with_outcome(by(event::Column::Slug, "tx"))
            .await
            .unwrap()
            .1,
        Outcome::Hit
    );
    assert_eq!(
        events
            .get(by(event::Column::Slug, "tx"))
            .await
            .unwrap()
            .title,
        "Title of tx"
    );

    let id = e.id;
    h.fdb
        .transaction(|tx| {
            Box::pin(async move {
                tx.update(event::ActiveModel {
                    id: Set(id),
                    title: Set("committed".into()),
                    ..Default::default()
                })
                .await?;
                tx.insert(event::ActiveModel {
                    slug: Set("tx2".into()),
                    title: Set("x".into()),
                    city: Set("Oslo".into()),
                    ..Default::default()
                })
                .await?;
                Ok(())
            })
        })
        .await
        .unwrap();
    assert!(invalidated() > before);
    assert_eq!(
        events
            .get(by(event::Column::Slug, "tx"))
            .await
            .unwrap()
            .title,
        "committed"
    );
    assert!(events.get(by(event::Column::Slug, "tx2")).await.is_ok());
}

#[tokio::test]
async fn hostile_key_values_are_looked_up_correctly() {
    let h = quiet_harness().await;
    let events = h.fdb.cache::<event::Entity>();
    // MySQL's default string column is VARCHAR(255); long enough to be hashed.
    let long = "L".repeat(if flash::config::database_url().starts_with("mysql") {
        240
    } else {
        10_000
    });
    let mut slugs = vec![
        "",
        " ",
        "a b",
        "line\nbreak",
        "ünï ✓ 日本",
        "a__b",
        "~7e",
        long.as_str(),
    ];
    if flash::config::database_url().starts_with("mysql") {
        // MySQL's PAD SPACE collations make '' and ' ' the same unique value.
        slugs.retain(|s| *s != " ");
    }
    for s in slugs.iter().copied() {
        add_event(&h.fdb, s, "Oslo").await;
    }
    for s in slugs {
        let key = events.cache_key(&by(event::Column::Slug, s)).unwrap();
        assert!(
            key.len() <= 250 && key.bytes().all(|b| b.is_ascii_graphic()),
            "{key}"
        );
        assert_eq!(
            events.get(by(event::Column::Slug, s)).await.unwrap().slug,
            s
        );
        assert_eq!(
            events
                .get_with_outcome(by(event::Column::Slug, s))
                .await
                .unwrap()
                .0
                .unwrap()
                .slug,
            s
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_on_one_key_fetch_once() {
    let h = quiet_harness().await;
    let e = add_event(&h.fdb, "hot", "Oslo").await;
    let fdb = h.fdb.clone();
    // The insert's captured record would invalidate the key again mid-burst.
    fdb.apply_captured().await.unwrap();
    let before = fdb.flash().stats().snapshot().db_fetches;
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let fdb = fdb.clone();
            tokio::spawn(async move {
                fdb.cache::<event::Entity>()
                    .get(by(event::Column::Id, e.id))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().slug, "hot");
    }
    assert_eq!(
        fdb.flash().stats().snapshot().db_fetches - before,
        1,
        "one database fetch for the whole burst"
    );
}

#[tokio::test]
async fn the_observer_sees_every_lookup_and_invalidation() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let (h, _) = quiet_harness_with(
        move |b| {
            b.observer(move |e| {
                let line = match e {
                    flash_core::FlashEvent::Lookup { class, outcome, .. } => {
                        format!("lookup {class} {}", outcome.label())
                    }
                    flash_core::FlashEvent::Invalidate { model, keys } => {
                        format!("invalidate {model} {}", keys.len())
                    }
                    flash_core::FlashEvent::VersionBump { model, .. } => format!("bump {model}"),
                };
                log.lock().unwrap().push(line);
            })
        },
        |_| (),
    )
    .await;
    let e = add_event(&h.fdb, "obs", "Oslo").await;
    h.fdb
        .cache::<event::Entity>()
        .get(by(event::Column::Id, e.id))
        .await
        .unwrap();
    h.fdb
        .cache::<event::Entity>()
        .get(by(event::Column::Id, e.id))
        .await
        .unwrap();
    h.fdb.flash().bump_version_for_model("event").await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.starts_with("invalidate event ")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"lookup event_by_id miss".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"lookup event_by_id hit".to_string()),
        "{seen:?}"
    );
    assert!(seen.contains(&"bump event".to_string()), "{seen:?}");
}

/// An update of a row that does not exist is a typed error (SeaORM's
/// `RecordNotUpdated`, as a plain update gives), on every write path: a
/// non-key field, a key field, with and without the outbox. Nothing is
/// written, and the outbox keeps no record of it.
#[tokio::test]
async fn updating_a_missing_row_is_a_typed_error_and_writes_nothing() {
    let h = quiet_harness().await;
    let e = add_event(&h.fdb, "here", "Oslo").await;
    let mut reg = Registrar::new(h.db.clone())
        .configure(|b| b.prefix(common::unique("t") + ":"))
        .outbox(true);
    flash_test_kit::declare(&mut reg, Duration::from_secs(60)).unwrap();
    let with_outbox = reg.build().await.unwrap();
    let missing = e.id + 1000;
    for fdb in [&h.fdb, &with_outbox] {
        for am in [
            event::ActiveModel {
                id: Set(missing),
                title: Set("nobody".into()),
                ..Default::default()
            },
            event::ActiveModel {
                id: Set(missing),
                slug: Set("nobody".into()),
                ..Default::default()
            },
        ] {
            match fdb.update(am).await {
                Err(Error::Source(s)) => assert!(
                    s.to_string().contains("None of the records are updated"),
                    "{s}"
                ),
                other => panic!("expected a source error, got {other:?}"),
            }
        }
    }
    let events = h.fdb.cache::<event::Entity>();
    assert!(events
        .get_or_none(by(event::Column::Slug, "nobody"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(events.get(by(event::Column::Id, e.id)).await.unwrap(), e);
    with_outbox.drain_outbox().await.unwrap();
    let left = sea_orm::ConnectionTrait::query_one(
        &h.db,
        sea_orm::Statement::from_string(
            sea_orm::ConnectionTrait::get_database_backend(&h.db),
            format!("SELECT COUNT(*) AS n FROM {}", flash_sea_orm::OUTBOX_TABLE),
        ),
    )
    .await
    .unwrap()
    .unwrap()
    .try_get::<i64>("", "n")
    .unwrap();
    assert_eq!(left, 0, "a failed update leaves no outbox row");
}

/// `exists_key` (the original's `QuerysetExistsCache`): the flag is cached,
/// `false` included, and flips with every write that changes the answer.
#[tokio::test]
async fn exists_cache_is_cached_and_flips_with_writes() {
    let h = quiet_harness().await;
    let u = add_user(&h.fdb, "ann").await;
    let e = add_event(&h.fdb, "quiet", "Oslo").await;
    let parts = h.fdb.cache::<participation::Entity>();
    let lk = || by(participation::Column::EventId, e.id);

    assert_eq!(
        parts.exists_with_outcome(lk()).await.unwrap(),
        (false, Outcome::Miss)
    );
    h.take_queries();
    assert_eq!(
        parts.exists_with_outcome(lk()).await.unwrap(),
        (false, Outcome::Hit),
        "absence is cached"
    );
    assert_eq!(h.take_queries(), 0, "a hit asks no database");

    let p = add_participation(&h.fdb, u.id, e.id).await;
    assert!(parts.exists(lk()).await.unwrap(), "an insert flips it");
    assert_eq!(
        parts.exists_with_outcome(lk()).await.unwrap(),
        (true, Outcome::Hit)
    );

    // A move to another event flips both events' flags.
    let other = add_event(&h.fdb, "busy", "Oslo").await;
    assert!(!parts
        .exists(by(participation::Column::EventId, other.id))
        .await
        .unwrap());
    h.fdb
        .update(participation::ActiveModel {
            id: Set(p.id),
            event_id: Set(other.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!parts.exists(lk()).await.unwrap(), "the old event has none");
    assert!(parts
        .exists(by(participation::Column::EventId, other.id))
        .await
        .unwrap());

    // In a batch, and undeclared tuples are a typed error.
    let mut batch = h.fdb.flash().batch();
    let q = batch.add(parts.exists_query(&lk()).unwrap());
    assert!(!batch.run().await.take(q).unwrap());
    assert!(matches!(
        parts.exists(by(participation::Column::Role, "guest")).await,
        Err(Error::CacheNotRegistered { kind: "exists", .. })
    ));
}

fn get_many_calls(h: &Harness) -> u64 {
    h.backend.calls(Op::GetMany)
}

/// The original's async lookups (DataLoader-style): lookups started together
/// through one request are one `get_many`; a request asks the cache once per
/// key and keeps the value for its life (a snapshot: a new request sees later
/// writes).
#[tokio::test]
async fn request_scope_batches_lookups_started_together_and_memoises() {
    let h = quiet_harness().await;
    let u = add_user(&h.fdb, "bo").await;
    let a = add_event(&h.fdb, "ra", "Oslo").await;
    let b = add_event(&h.fdb, "rb", "Rome").await;
    add_participation(&h.fdb, u.id, a.id).await;
    h.settle().await;
    let req = h.fdb.request();

    // Cold: one get_many for five lookups of four classes; the misses fill.
    let calls = get_many_calls(&h);
    let (ea, eb, user, parts, joined) = tokio::join!(
        req.cache::<event::Entity>()
            .get(by(event::Column::Id, a.id)),
        req.cache::<event::Entity>()
            .get(by(event::Column::Slug, "rb")),
        req.cache::<user::Entity>()
            .get_or_none(by(user::Column::Id, u.id)),
        req.cache::<participation::Entity>()
            .filter(by(participation::Column::UserId, u.id)),
        req.cache::<participation::Entity>()
            .exists(by(participation::Column::EventId, b.id)),
    );
    assert_eq!(ea.unwrap(), a);
    assert_eq!(eb.unwrap(), b);
    assert_eq!(user.unwrap(), Some(u.clone()));
    assert_eq!(parts.unwrap().len(), 1);
    assert!(!joined.unwrap());
    assert_eq!(get_many_calls(&h) - calls, 1, "one batch read");
    assert_eq!(req.scope().memoised(), 5);

    // The same keys again, concurrently and many times: no cache read, no query.
    h.take_queries();
    let calls = get_many_calls(&h);
    let again = futures::future::join_all((0..200).map(|_| {
        req.cache::<event::Entity>()
            .get(by(event::Column::Id, a.id))
    }))
    .await;
    assert!(again.into_iter().all(|r| r.unwrap() == a));
    assert_eq!(get_many_calls(&h), calls, "answered from the request");
    assert_eq!(h.take_queries(), 0);

    // A write: this request keeps its snapshot, a new one sees the write.
    h.fdb
        .update(event::ActiveModel {
            id: Set(a.id),
            title: Set("changed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        req.cache::<event::Entity>()
            .get(by(event::Column::Id, a.id))
            .await
            .unwrap()
            .title,
        a.title
    );
    let fresh = h.fdb.request();
    assert_eq!(
        fresh
            .cache::<event::Entity>()
            .get(by(event::Column::Id, a.id))
            .await
            .unwrap()
            .title,
        "changed"
    );

    // Absence is a typed error, and errors are not kept.
    assert!(matches!(
        req.cache::<event::Entity>()
            .get(by(event::Column::Id, b.id + 1000))
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        req.cache::<event::Entity>()
            .get(by(event::Column::Title, "x"))
            .await,
        Err(Error::CacheNotRegistered { .. })
    ));
}

/// Lookups of one key from many tasks of one request, started together, cost
/// one cache read and, cold, one database query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_scope_shares_one_load_across_tasks() {
    let h = quiet_harness().await;
    let e = add_event(&h.fdb, "shared", "Oslo").await;
    let req = h.fdb.request();
    h.take_queries();
    let calls = get_many_calls(&h);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let req = req.clone();
            tokio::spawn(async move {
                req.cache::<event::Entity>()
                    .get(by(event::Column::Slug, "shared"))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), e);
    }
    assert_eq!(h.take_queries(), 1, "one database query for the cold key");
    let reads = get_many_calls(&h) - calls;
    assert!(
        reads <= 3,
        "lookups of one key share their load ({reads} cache reads)"
    );
    assert_eq!(req.scope().memoised(), 1);
}
