//! Scenario 10, what seals cost: a hit on a server cache with values sealed
//! (the default: a BLAKE3 tag of key and bytes), sealed with a secret (a
//! keyed MAC), and unsealed (the format before seals), interleaved round by
//! round.

use super::setup::flash_db_with;
use super::stats::{fmt_dur, fmt_ratio, ratio, BenchResult, Report, Samples, Section, Verdict};
use super::Env;
use flash_core::seal::Sealer;
use flash_core::Outcome;
use flash_sea_orm::{by, FlashDb};
use flash_test_kit::entities::event;

const VARIANTS: [&str; 3] = ["unsealed (before)", "sealed", "sealed with a secret"];

pub async fn seal_cost(env: &Env, report: &mut Report) -> BenchResult<()> {
    let plan = &env.plan;
    let ids: Vec<i32> = (1..=plan.hot).collect();
    let mut sec = Section::new(
        "11. Entry seals: hit cost",
        &format!(
            "Sequential `get_with_outcome(by(Id, id))` hits over {} operations per variant, \
             {} hot keys, on one database and backend; the three handles differ only in \
             `unsafe_unsealed_entries()` / `entry_secret(..)` and their key prefix.",
            plan.rounds * plan.per_round,
            ids.len()
        ),
        &["cache", "variant", "median", "p99", "÷ unsealed"],
    );
    for p in env.primary_pairs() {
        let c = &env.caches[p.cache];
        if !c.flash_backend.shared() {
            continue; // the in-process store carries no seal
        }
        let db = &env.dbs[p.db].db;
        let mut handles: Vec<FlashDb> = Vec::new();
        for (v, _) in VARIANTS.iter().enumerate() {
            let prefix = format!("{}s{v}:", p.prefix);
            let fdb = flash_db_with(db, c.flash_backend.clone(), prefix, |b| match v {
                0 => b.unsafe_unsealed_entries(),
                1 => b,
                _ => b.entry_secret(b"bench secret".to_vec()),
            })
            .await?;
            for id in &ids {
                fdb.cache::<event::Entity>()
                    .get(by(event::Column::Id, *id))
                    .await?;
            }
            handles.push(fdb);
        }
        let mut samples = vec![Samples::default(); VARIANTS.len()];
        let per = plan.per_round;
        for round in 0..=plan.rounds {
            let mut scratch = Samples::default();
            // Each round starts with another variant: a slow spell of the
            // machine at a fixed point of the round lands on each in turn.
            for j in 0..handles.len() {
                let v = (round + j) % handles.len();
                let fdb = &handles[v];
                let out = if round == 0 {
                    &mut scratch
                } else {
                    &mut samples[v]
                };
                let cache = fdb.cache::<event::Entity>();
                time_loop!(round * per, per, out, |i| {
                    let (row, o) = cache
                        .get_with_outcome(by(event::Column::Id, ids[i % ids.len()]))
                        .await?;
                    if row.is_none() || !matches!(o, Outcome::Hit | Outcome::Degraded) {
                        return Err(format!("expected a hit, got {o:?}").into());
                    }
                });
            }
        }
        // The check alone, on a real sealed entry: what the hit pays for it.
        let key = handles[1]
            .cache::<event::Entity>()
            .cache_key(&by(event::Column::Id, ids[0]))?;
        let bytes = c.raw.get_many(std::slice::from_ref(&key)).await?[0]
            .clone()
            .ok_or("the sealed entry is cached")?;
        let sealer = Sealer::unkeyed();
        const CHECKS: u32 = 100_000;
        let t = std::time::Instant::now();
        for _ in 0..CHECKS {
            std::hint::black_box(sealer.open(std::hint::black_box(&key), &bytes).is_ok());
        }
        let per_check = t.elapsed() / CHECKS;
        sec.row(vec![
            c.name.into(),
            format!("the seal check alone ({} B entry)", bytes.len()),
            fmt_dur(per_check),
            String::new(),
            format!(
                "{:.3}× of the unsealed hit",
                1.0 + per_check.as_secs_f64() / samples[0].median().as_secs_f64()
            ),
        ]);
        for (v, name) in VARIANTS.iter().enumerate() {
            let r = ratio(&samples[v], &samples[0]);
            sec.row(vec![
                c.name.into(),
                (*name).into(),
                fmt_dur(samples[v].median()),
                fmt_dur(samples[v].p99()),
                if v == 0 { String::new() } else { fmt_ratio(r) },
            ]);
            if v > 0 {
                report.check(
                    &format!("{name} hit ≤ 1.05 × unsealed"),
                    c.name,
                    format!(
                        "{} vs {} = {}",
                        fmt_dur(samples[v].median()),
                        fmt_dur(samples[0].median()),
                        fmt_ratio(r)
                    ),
                    Verdict::of(r <= 1.05),
                );
            }
        }
    }
    report.sections.push(sec);
    Ok(())
}
