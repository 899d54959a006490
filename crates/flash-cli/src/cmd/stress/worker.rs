//! One worker process: writer tasks over the rows they own, reader tasks that
//! check every lookup against the last *returned* write.

use super::{build, BoxError, StressArgs, EVENTS, HOT, PARTICIPATIONS, PROGRESS_TABLE, USERS};
use flash::config::{connect_namespace, database_url};
use flash_sea_orm::{by, Changes, FlashDb};
use flash_test_kit::entities::{event, participation, user};
use flash_test_kit::DemoClasses;
use rand::{Rng, SeedableRng};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend,
    EntityTrait, Set, Statement, Value,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a worker did and found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub reads: u64,
    pub writes: u64,
    pub renames: u64,
    pub moves: u64,
    pub bulk: u64,
    pub txns: u64,
    pub deletes: u64,
    pub violations: u64,
    /// Writes that bypassed flash (raw SQL, plain SeaORM): part of `writes`.
    pub foreign: u64,
    /// Lookups of the related classes checked (b) (a many-to-many list and a
    /// related instance each).
    pub related_reads: u64,
    /// Lookups served by the near tier (with `--near`).
    pub near_hits: u64,
    /// Foreign writes (and, with `--partition`, writes of the cut-off
    /// process, with `--near` other processes' writes, read elsewhere) seen stale by a reader: (event, revision) → the longest
    /// time, in µs, from the write's return to the start of a stale lookup.
    pub stale_after: HashMap<(i32, i64), i64>,
}

impl Report {
    /// The report as stdout lines: one `REPORT` line of counters, then one
    /// `STALE id revision µs` line per foreign write seen stale.
    pub fn to_lines(&self) -> String {
        let mut out = format!(
            "REPORT {} {} {} {} {} {} {} {} {} {} {}",
            self.reads,
            self.writes,
            self.renames,
            self.moves,
            self.bulk,
            self.txns,
            self.deletes,
            self.violations,
            self.foreign,
            self.related_reads,
            self.near_hits
        );
        for ((id, rev), us) in &self.stale_after {
            out.push_str(&format!("\nSTALE {id} {rev} {us}"));
        }
        out
    }
    /// Parses a worker's stdout; `None` without its `REPORT` line.
    pub fn from_output(text: &str) -> Option<Report> {
        let line = text.lines().rev().find(|l| l.starts_with("REPORT "))?;
        let mut it = line
            .strip_prefix("REPORT ")?
            .split(' ')
            .map(|s| s.parse::<u64>().ok());
        let mut r = Report {
            reads: it.next()??,
            writes: it.next()??,
            renames: it.next()??,
            moves: it.next()??,
            bulk: it.next()??,
            txns: it.next()??,
            deletes: it.next()??,
            violations: it.next()??,
            foreign: it.next()??,
            related_reads: it.next()??,
            near_hits: it.next()??,
            stale_after: HashMap::new(),
        };
        for l in text.lines() {
            let Some(rest) = l.strip_prefix("STALE ") else {
                continue;
            };
            let v: Vec<i64> = rest.split(' ').filter_map(|s| s.parse().ok()).collect();
            if let [id, rev, us] = v[..] {
                r.note_stale(id as i32, rev, us);
            }
        }
        Some(r)
    }
    fn note_stale(&mut self, id: i32, rev: i64, us: i64) {
        let e = self.stale_after.entry((id, rev)).or_insert(us);
        *e = (*e).max(us);
    }
    pub fn merge(&self, o: &Report) -> Report {
        let mut r = Report {
            reads: self.reads + o.reads,
            writes: self.writes + o.writes,
            renames: self.renames + o.renames,
            moves: self.moves + o.moves,
            bulk: self.bulk + o.bulk,
            txns: self.txns + o.txns,
            deletes: self.deletes + o.deletes,
            violations: self.violations + o.violations,
            foreign: self.foreign + o.foreign,
            related_reads: self.related_reads + o.related_reads,
            near_hits: self.near_hits + o.near_hits,
            stale_after: self.stale_after.clone(),
        };
        for (&(id, rev), &us) in &o.stale_after {
            r.note_stale(id, rev, us);
        }
        r
    }
}

/// Wall-clock microseconds: shared by the processes of one machine.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn slug(id: i32, rev: i64) -> String {
    if rev == 0 {
        format!("ev{id}")
    } else {
        format!("ev{id}-r{rev}")
    }
}

/// Every slug event `id` has had up to revision `rev` (renames keep the
/// revision in the slug, so these are all candidates).
pub(crate) fn slugs_up_to(id: i32, rev: i64) -> impl Iterator<Item = String> {
    (0..=rev).map(move |r| slug(id, r))
}

fn ph(db: &DatabaseConnection, n: usize) -> String {
    if db.get_database_backend() == DbBackend::Postgres {
        format!("${n}")
    } else {
        "?".into()
    }
}

/// Seeds users, events, participations and the progress table.
pub async fn seed(db: &DatabaseConnection) -> Result<(), BoxError> {
    db.execute_unprepared(&format!("CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (event_id INT PRIMARY KEY, revision BIGINT NOT NULL, slug VARCHAR(255) NOT NULL, written_us BIGINT NOT NULL DEFAULT 0)"))
        .await?;
    let users: Vec<user::ActiveModel> = (1..=USERS)
        .map(|i| user::ActiveModel {
            id: Set(i),
            username: Set(format!("u{i}")),
            name: Set(format!("User {i}")),
        })
        .collect();
    user::Entity::insert_many(users).exec(db).await?;
    let events: Vec<event::ActiveModel> = (1..=EVENTS)
        .map(|i| event::ActiveModel {
            id: Set(i),
            slug: Set(slug(i, 0)),
            title: Set("t0".into()),
            city: Set("Oslo".into()),
            revision: Set(0),
        })
        .collect();
    event::Entity::insert_many(events).exec(db).await?;
    let parts: Vec<participation::ActiveModel> = (1..=PARTICIPATIONS)
        .map(|i| participation::ActiveModel {
            id: Set(i),
            user_id: Set(1 + i % USERS),
            event_id: Set(1 + i % EVENTS),
            role: Set("guest".into()),
        })
        .collect();
    participation::Entity::insert_many(parts).exec(db).await?;
    for i in 1..=EVENTS {
        let sql = format!(
            "INSERT INTO {PROGRESS_TABLE} (event_id, revision, slug) VALUES ({}, {}, {})",
            ph(db, 1),
            ph(db, 2),
            ph(db, 3)
        );
        db.execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            &sql,
            [Value::from(i), Value::from(0i64), Value::from(slug(i, 0))],
        ))
        .await?;
    }
    if db.get_database_backend() == DbBackend::Postgres {
        // Explicit ids above: move the sequences past them.
        for t in ["event", "participation", "\"user\""] {
            let seq_t = t.trim_matches('"');
            db.execute_unprepared(&format!(
                "SELECT setval(pg_get_serial_sequence('{seq_t}', 'id'), (SELECT MAX(id) FROM {t}))"
            ))
            .await?;
        }
    }
    Ok(())
}

/// 1 000 concurrent lookups of one cold key: returns the database fetches.
pub async fn stampede(fdb: &FlashDb, n: usize) -> Result<u64, BoxError> {
    let before = fdb.flash().stats().snapshot().db_fetches;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let fdb = fdb.clone();
            tokio::spawn(async move {
                fdb.cache::<user::Entity>()
                    .get(by(user::Column::Id, 1))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(fdb.flash().stats().snapshot().db_fetches - before)
}

pub async fn run_process(args: &StressArgs, id: u32) -> Result<Report, BoxError> {
    let ns = args.ns.clone().ok_or("--ns missing")?;
    let db = connect_namespace(&database_url(), &ns, false, 8).await?;
    let cache = args.cache.clone().ok_or("--cache missing")?;
    let prefix = args.prefix.clone().ok_or("--prefix missing")?;
    let delay = std::time::Duration::from_millis(args.fill_delay_ms);
    let (fdb, classes) = build(
        db.clone(),
        &cache,
        &prefix,
        args.no_leases,
        !args.no_capture,
        delay,
        args.near,
    )
    .await?;
    let w = Worker::new(
        fdb.clone(),
        classes,
        id,
        (args.readers, args.writers, args.foreign_writers),
        args.slots.unwrap_or(args.writers),
        db,
    )
    .with_cut_process(args.partition.then_some(0))
    .near(args.near);
    let mut report = w.run(args.worker_ops.unwrap_or(10_000)).await?;
    report.near_hits = fdb
        .flash()
        .near_stats()
        .map_or(0, |n| n.hits.load(Ordering::Relaxed));
    // Delete the outbox rows this process applied, so that what is left is
    // only what was never applied.
    fdb.flush_outbox().await?;
    Ok(report)
}

#[derive(Clone)]
pub struct Worker {
    fdb: FlashDb,
    classes: DemoClasses,
    id: u32,
    readers: u32,
    writers: u32,
    /// The first `foreign` writer tasks of each process write around flash.
    foreign: u32,
    slots: u32,
    db: DatabaseConnection,
    /// `--partition`: the process whose cache connection is cut at times.
    /// Its writes through flash reach the other processes through capture,
    /// so their readers may see them stale within the lag bound (e).
    cut_process: Option<u32>,
    /// A near tier is on: other processes' writes may be seen late (d).
    near: bool,
}

impl Worker {
    /// With a near tier: reads of rows other processes write are measured
    /// as (d), within the near tier's bound, not counted as violations.
    pub fn near(mut self, on: bool) -> Self {
        self.near = on;
        self
    }

    /// Does a writer of this process own event `id`?
    fn own_process(&self, id: i32) -> bool {
        (id as u32 % self.slots) / self.writers == self.id
    }
    /// `tasks`: readers, writers, and how many of the writers are foreign.
    pub fn new(
        fdb: FlashDb,
        classes: DemoClasses,
        id: u32,
        tasks: (u32, u32, u32),
        slots: u32,
        db: DatabaseConnection,
    ) -> Self {
        let (readers, writers, foreign) = tasks;
        Worker {
            fdb,
            classes,
            id,
            readers: readers.max(1),
            writers: writers.max(1),
            foreign: foreign.min(writers.max(1)),
            slots: slots.max(1),
            db,
            cut_process: None,
            near: false,
        }
    }

    /// Marks `process` as the one whose cache connection is cut at times.
    pub fn with_cut_process(mut self, process: Option<u32>) -> Self {
        self.cut_process = process;
        self
    }

    /// Does the event `id` belong to a writer of the cut-off process, read
    /// from another process?
    fn cut_owned(&self, id: i32) -> bool {
        self.cut_process
            .is_some_and(|p| p != self.id && super::owner(id, self.slots, self.writers).0 == p)
    }

    /// Is the owner of event `id` a foreign writer? (Slot `p * writers + w`
    /// is writer `w` of process `p`; writers `0..foreign` are foreign.)
    fn foreign_owned(&self, id: i32) -> bool {
        super::owner(id, self.slots, self.writers).1 < self.foreign
    }

    pub async fn run(&self, ops: u64) -> Result<Report, BoxError> {
        // A fifth of the operations are writes.
        let budget_w = Arc::new(AtomicU64::new(ops / 5));
        let budget_r = Arc::new(AtomicU64::new(ops - ops / 5));
        let mut tasks: Vec<tokio::task::JoinHandle<Result<Report, BoxError>>> = Vec::new();
        for w in 0..self.writers {
            let (me, b) = (self.clone(), budget_w.clone());
            let slot = self.id * self.writers + w;
            if w < self.foreign {
                tasks.push(tokio::spawn(async move {
                    me.foreign_writer(slot, b)
                        .await
                        .map_err(|e| format!("foreign writer {slot}: {e}").into())
                }));
            } else {
                tasks.push(tokio::spawn(async move {
                    me.writer(slot, b)
                        .await
                        .map_err(|e| format!("writer {slot}: {e}").into())
                }));
            }
        }
        for r in 0..self.readers {
            let (me, b) = (self.clone(), budget_r.clone());
            tasks.push(tokio::spawn(async move {
                me.reader(r, b)
                    .await
                    .map_err(|e| format!("reader {r}: {e}").into())
            }));
        }
        let mut report = Report::default();
        for t in tasks {
            report = report.merge(&t.await??);
        }
        Ok(report)
    }

    async fn publish(&self, id: i32, rev: i64, s: &str) -> Result<(), BoxError> {
        self.publish_at(id, rev, s, now_us()).await
    }

    /// Publishes a write that returned at `written_us` (wall clock).
    async fn publish_at(
        &self,
        id: i32,
        rev: i64,
        s: &str,
        written_us: i64,
    ) -> Result<(), BoxError> {
        let sql = format!(
            "UPDATE {PROGRESS_TABLE} SET revision = {}, slug = {}, written_us = {} WHERE event_id = {}",
            ph(&self.db, 1),
            ph(&self.db, 2),
            ph(&self.db, 3),
            ph(&self.db, 4)
        );
        self.db
            .execute(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                &sql,
                [
                    Value::from(rev),
                    Value::from(s.to_owned()),
                    Value::from(written_us),
                    Value::from(id),
                ],
            ))
            .await?;
        Ok(())
    }

    /// The events and participations slot `slot` owns (it is their only writer).
    async fn owned(&self, slot: u32) -> Result<(HashMap<i32, (i64, String)>, Vec<i32>), BoxError> {
        let mut events = HashMap::new();
        for id in (1..=EVENTS).filter(|i| (*i as u32) % self.slots == slot) {
            let e = event::Entity::find_by_id(id)
                .one(&self.db)
                .await?
                .ok_or("seeded event missing")?;
            events.insert(id, (e.revision, e.slug));
        }
        let parts = (1..=PARTICIPATIONS)
            .filter(|i| (*i as u32) % self.slots == slot)
            .collect();
        Ok((events, parts))
    }

    /// A writer that bypasses flash: raw SQL on the events (title updates,
    /// slug renames, a three-row update), plain SeaORM on the participations
    /// (moves, delete and insert). Only capture invalidates what it writes.
    async fn foreign_writer(&self, slot: u32, budget: Arc<AtomicU64>) -> Result<Report, BoxError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(slot) * 7919 + 1);
        let mut report = Report::default();
        let (mut events, mut parts) = self.owned(slot).await?;
        let ids: Vec<i32> = events.keys().copied().collect();
        let hot: Vec<i32> = ids.iter().copied().filter(|i| *i <= HOT).collect();
        if ids.is_empty() {
            return Ok(report);
        }
        let db = &self.db;
        while budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_ok()
        {
            report.writes += 1;
            report.foreign += 1;
            let id = if !hot.is_empty() && rng.random_bool(0.8) {
                hot[rng.random_range(0..hot.len())]
            } else {
                ids[rng.random_range(0..ids.len())]
            };
            let (rev, s) = events[&id].clone();
            let pick = rng.random_range(0..100);
            let what = match pick {
                0..=44 => "raw title update",
                45..=69 => "raw slug rename",
                70..=79 => "raw update of 3 rows",
                80..=89 => "SeaORM participation move",
                _ => "SeaORM participation delete + insert",
            };
            let r: Result<(), BoxError> = async {
            match pick {
                0..=44 => {
                    db.execute_unprepared(&format!(
                        "UPDATE event SET title = 'raw{}', revision = {} WHERE id = {id}",
                        rev + 1,
                        rev + 1
                    ))
                    .await?;
                    let at = now_us();
                    events.insert(id, (rev + 1, s.clone()));
                    self.publish_at(id, rev + 1, &s, at).await?;
                }
                45..=69 => {
                    let ns = slug(id, rev + 1);
                    db.execute_unprepared(&format!(
                        "UPDATE event SET slug = '{ns}', revision = {} WHERE id = {id}",
                        rev + 1
                    ))
                    .await?;
                    let at = now_us();
                    events.insert(id, (rev + 1, ns.clone()));
                    self.publish_at(id, rev + 1, &ns, at).await?;
                    report.renames += 1;
                }
                70..=79 => {
                    let mut some: Vec<i32> = (0..3)
                        .map(|_| ids[rng.random_range(0..ids.len())])
                        .collect();
                    some.sort_unstable();
                    some.dedup();
                    let list = some
                        .iter()
                        .map(i32::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    db.execute_unprepared(&format!(
                        "UPDATE event SET revision = revision + 1, title = 'rawbulk' WHERE id IN ({list})"
                    ))
                    .await?;
                    let at = now_us();
                    for i in some {
                        let (r, s) = events[&i].clone();
                        events.insert(i, (r + 1, s.clone()));
                        self.publish_at(i, r + 1, &s, at).await?;
                    }
                    report.bulk += 1;
                }
                80..=89 if !parts.is_empty() => {
                    let p = parts[rng.random_range(0..parts.len())];
                    participation::ActiveModel {
                        id: Set(p),
                        user_id: Set(rng.random_range(1..=USERS)),
                        ..Default::default()
                    }
                    .update(db)
                    .await?;
                    report.moves += 1;
                }
                _ if !parts.is_empty() => {
                    let i = rng.random_range(0..parts.len());
                    let p = parts.swap_remove(i);
                    participation::Entity::delete_by_id(p).exec(db).await?;
                    let n = participation::ActiveModel {
                        user_id: Set(rng.random_range(1..=USERS)),
                        event_id: Set(rng.random_range(1..=EVENTS)),
                        role: Set("guest".into()),
                        ..Default::default()
                    }
                    .insert(db)
                    .await?;
                    parts.push(n.id);
                    report.deletes += 1;
                }
                _ => {}
            }
            Ok(())
            }
            .await;
            r.map_err(|e| format!("{what}: {e}"))?;
        }
        Ok(report)
    }

    async fn writer(&self, slot: u32, budget: Arc<AtomicU64>) -> Result<Report, BoxError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(slot) * 7919 + 1);
        let mut report = Report::default();
        // The rows this slot owns, with their current state (it is their only writer).
        let (mut events, mut parts) = self.owned(slot).await?;
        let ids: Vec<i32> = events.keys().copied().collect();
        let hot: Vec<i32> = ids.iter().copied().filter(|i| *i <= HOT).collect();
        if ids.is_empty() {
            return Ok(report);
        }
        while budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_ok()
        {
            report.writes += 1;
            // Writes go where the reads are (the hot tenth), to make races likely.
            let id = if !hot.is_empty() && rng.random_bool(0.8) {
                hot[rng.random_range(0..hot.len())]
            } else {
                ids[rng.random_range(0..ids.len())]
            };
            let (rev, s) = events[&id].clone();
            let pick = rng.random_range(0..100);
            let what = match pick {
                0..=34 => "flash title update",
                35..=54 => "flash slug rename",
                55..=64 => "flash update_many",
                65..=74 => "flash transaction",
                75..=89 => "flash participation move",
                _ => "flash participation delete + insert",
            };
            let r: Result<(), BoxError> = async {
                match pick {
                    0..=34 => {
                        let m = self
                            .fdb
                            .update(event::ActiveModel {
                                id: Set(id),
                                title: Set(format!("t{}", rev + 1)),
                                revision: Set(rev + 1),
                                ..Default::default()
                            })
                            .await?;
                        events.insert(id, (m.revision, m.slug.clone()));
                        self.publish(id, m.revision, &m.slug).await?;
                    }
                    35..=54 => {
                        let ns = slug(id, rev + 1);
                        let m = self
                            .fdb
                            .update(event::ActiveModel {
                                id: Set(id),
                                slug: Set(ns),
                                revision: Set(rev + 1),
                                ..Default::default()
                            })
                            .await?;
                        events.insert(id, (m.revision, m.slug.clone()));
                        self.publish(id, m.revision, &m.slug).await?;
                        report.renames += 1;
                    }
                    55..=64 => {
                        let some: Vec<i32> = (0..3)
                            .map(|_| ids[rng.random_range(0..ids.len())])
                            .collect();
                        self.fdb
                            .update_many::<event::Entity>(
                                Condition::all().add(event::Column::Id.is_in(some.clone())),
                                Changes::new()
                                    .set_expr(
                                        event::Column::Revision,
                                        Expr::col(event::Column::Revision).add(1),
                                    )
                                    .set(event::Column::Title, "bulk"),
                            )
                            .await?;
                        let mut done = some.clone();
                        done.sort_unstable();
                        done.dedup();
                        for i in done {
                            let e = event::Entity::find_by_id(i)
                                .one(&self.db)
                                .await?
                                .ok_or("owned event missing")?;
                            events.insert(i, (e.revision, e.slug.clone()));
                            self.publish(i, e.revision, &e.slug).await?;
                        }
                        report.bulk += 1;
                    }
                    65..=74 => {
                        let other = ids[rng.random_range(0..ids.len())];
                        let (orev, _) = events[&other].clone();
                        let (a, b) = (id, other);
                        let out = self
                            .fdb
                            .transaction(move |tx| {
                                Box::pin(async move {
                                    let m1 = tx
                                        .update(event::ActiveModel {
                                            id: Set(a),
                                            title: Set("tx".into()),
                                            revision: Set(rev + 1),
                                            ..Default::default()
                                        })
                                        .await?;
                                    if b == a {
                                        return Ok(vec![m1]);
                                    }
                                    let m2 = tx
                                        .update(event::ActiveModel {
                                            id: Set(b),
                                            title: Set("tx".into()),
                                            revision: Set(orev + 1),
                                            ..Default::default()
                                        })
                                        .await?;
                                    Ok(vec![m1, m2])
                                })
                            })
                            .await?;
                        for m in out {
                            events.insert(m.id, (m.revision, m.slug.clone()));
                            self.publish(m.id, m.revision, &m.slug).await?;
                        }
                        report.txns += 1;
                    }
                    75..=89 if !parts.is_empty() => {
                        let p = parts[rng.random_range(0..parts.len())];
                        let u = rng.random_range(1..=USERS);
                        self.fdb
                            .update(participation::ActiveModel {
                                id: Set(p),
                                user_id: Set(u),
                                ..Default::default()
                            })
                            .await?;
                        report.moves += 1;
                    }
                    _ if !parts.is_empty() => {
                        let i = rng.random_range(0..parts.len());
                        let p = parts.swap_remove(i);
                        if let Some(row) =
                            participation::Entity::find_by_id(p).one(&self.db).await?
                        {
                            self.fdb.delete::<participation::Entity>(&row).await?;
                        }
                        let e = rng.random_range(1..=EVENTS);
                        let n = self
                            .fdb
                            .insert(participation::ActiveModel {
                                user_id: Set(rng.random_range(1..=USERS)),
                                event_id: Set(e),
                                role: Set("guest".into()),
                                ..Default::default()
                            })
                            .await?;
                        parts.push(n.id);
                        report.deletes += 1;
                    }
                    _ => {}
                }
                Ok(())
            }
            .await;
            r.map_err(|e| format!("{what}: {e}"))?;
            let _ = s;
        }
        Ok(report)
    }

    /// Check (b) on the related classes: the events of user `u` through the
    /// participations (many-to-many) and the event of a random
    /// participation must hold every event at a revision no older than the
    /// one published before the lookup started.
    async fn check_related(
        &self,
        rng: &mut rand::rngs::StdRng,
        u: i32,
        report: &mut Report,
    ) -> Result<(), BoxError> {
        let rows = self
            .db
            .query_all(Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT event_id, revision, written_us FROM {PROGRESS_TABLE}"),
            ))
            .await?;
        let mut published = HashMap::new();
        for r in rows {
            let id: i32 = r.try_get("", "event_id")?;
            let rev: i64 = r.try_get("", "revision")?;
            let at: i64 = r.try_get("", "written_us")?;
            published.insert(id, (rev, at));
        }
        let started = now_us();
        let users = self.fdb.cache::<user::Entity>();
        let mut seen = users
            .related::<event::Entity>()
            .filter(by(user::Column::Id, u))
            .await?;
        let p = rng.random_range(1..=PARTICIPATIONS);
        let parts = self.fdb.cache::<participation::Entity>();
        seen.extend(
            parts
                .related::<event::Entity>()
                .get_or_none(by(participation::Column::Id, p))
                .await?,
        );
        for e in seen {
            let Some(&(rev0, written_us)) = published.get(&e.id) else {
                continue;
            };
            if e.revision >= rev0 {
                continue;
            }
            if self.foreign_owned(e.id)
                || self.cut_owned(e.id)
                || (self.near && !self.own_process(e.id))
            {
                report.note_stale(e.id, rev0, started - written_us);
            } else {
                report.violations += 1;
                eprintln!(
                    "violation: event {} at revision {} through a related class (user {u} / participation {p}), published revision {rev0}",
                    e.id, e.revision
                );
            }
        }
        report.related_reads += 1;
        Ok(())
    }

    async fn reader(&self, r: u32, budget: Arc<AtomicU64>) -> Result<Report, BoxError> {
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(u64::from(self.id) * 1_000_003 + u64::from(r));
        let mut report = Report::default();
        let events = self.fdb.cache::<event::Entity>();
        let parts = self.fdb.cache::<participation::Entity>();
        let f = self.fdb.flash();
        let sql = format!(
            "SELECT revision, slug, written_us FROM {PROGRESS_TABLE} WHERE event_id = {}",
            ph(&self.db, 1)
        );
        while budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_ok()
        {
            report.reads += 1;
            // Hot keys: a tenth of the events take most reads.
            let id = if rng.random_bool(0.8) {
                rng.random_range(1..=HOT)
            } else {
                rng.random_range(1..=EVENTS)
            };
            let row = self
                .db
                .query_one(Statement::from_sql_and_values(
                    self.db.get_database_backend(),
                    &sql,
                    [Value::from(id)],
                ))
                .await?
                .ok_or("progress row missing")?;
            let (rev0, slug0, written_us): (i64, String, i64) = (
                row.try_get("", "revision")?,
                row.try_get("", "slug")?,
                row.try_get("", "written_us")?,
            );
            // The published write returned before this lookup started: it must be
            // visible (through flash), or become visible soon (foreign: capture).
            // A stale answer is a hit read at the start of its lookup: the
            // time of the stale read is when the lookup started (its end
            // would add the reader's own waits for a connection or a lock).
            let id_at = now_us();
            let by_id = match events.get_or_none(by(event::Column::Id, id)).await? {
                Some(e) if e.revision >= rev0 => None,
                other => Some(format!("{other:?}")),
            };
            let slug_at = now_us();
            let by_slug = match events
                .get_or_none(by(event::Column::Slug, slug0.clone()))
                .await?
            {
                None => None,
                Some(e) if e.slug == slug0 && e.revision >= rev0 => None,
                Some(e) => Some(format!("{e:?}")),
            };
            if by_id.is_none() && by_slug.is_none() {
                // Fresh.
            } else if self.foreign_owned(id)
                || self.cut_owned(id)
                || (self.near && !self.own_process(id))
            {
                let at = if by_slug.is_some() { slug_at } else { id_at };
                report.note_stale(id, rev0, at - written_us);
            } else {
                report.violations += 1;
                eprintln!(
                    "violation: event {id} (by id: {by_id:?}, by slug {slug0}: {by_slug:?}), published revision {rev0}"
                );
            }
            if report.reads % 4 == 0 {
                let u = rng.random_range(1..=USERS);
                parts.filter(by(participation::Column::UserId, u)).await?;
                f.get(&self.classes.participation_count, &[u.into()])
                    .await?;
                f.get(&self.classes.event_ids, &[u.into()]).await?;
            }
            if report.reads % 16 == 0 {
                let u = rng.random_range(1..=USERS);
                self.check_related(&mut rng, u, &mut report).await?;
            }
        }
        Ok(report)
    }
}
