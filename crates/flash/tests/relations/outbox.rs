//! With capture off, the outbox carries what the related classes need: a
//! writer whose invalidation is lost after its commit (its cache refused it,
//! then the process died) leaves the inputs of its reverse queries in its
//! outbox row, and another process's drain invalidates the related keys too.

use super::common::{fresh_db, unique};
use super::setup::*;
use flash_core::{Backend, BackendError, MemoryBackend};
use flash_sea_orm::{FlashDb, Registrar};
use flash_test_kit::{schema, Hooked, Op};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn the_outbox_repairs_the_related_keys_of_a_writer_that_died_after_its_commit() {
    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    schema::create_tables(&db).await.unwrap();
    schema::create_relation_tables(&db).await.unwrap();
    // One in-process cache shared by the "processes", refusing
    // invalidations while `fail` is set.
    let fail = Arc::new(AtomicBool::new(false));
    let failing = fail.clone();
    let backend: Arc<dyn Backend> =
        Arc::new(Hooked::new(MemoryBackend::default()).before(move |call| {
            match call.op == Op::SetMany && failing.load(SeqCst) {
                true => Err(BackendError::Unreachable(
                    "test: invalidation refused".into(),
                )),
                false => Ok(()),
            }
        }));
    let prefix = unique("rel") + ":";
    let handle = |outbox: bool| {
        let (db, backend, prefix) = (db.clone(), backend.clone(), prefix.clone());
        async move {
            let mut reg = Registrar::new(db)
                .configure(|b| b.backend_arc(backend).prefix(prefix))
                .capture(false) // capture would repair it too: this is the outbox's test
                .outbox(outbox);
            declare(&mut reg);
            reg.build().await.unwrap()
        }
    };
    let writer: FlashDb = handle(true).await;
    let observer = handle(false).await;
    let rock = event(&writer, "rock").await;
    let t = ticket(&writer, rock.id, 1).await;
    let (ann, red) = (user(&writer, "ann").await, tag(&writer, "red").await);
    assert_eq!(event_of(&observer, t.id).await, rock);
    assert!(tags_of(&observer, ann.id).await.is_empty());
    observer.flash().settled().await;

    // A change at the end of a path and a link added: committed, their
    // invalidations refused, and the writer dies with its retry queue.
    fail.store(true, SeqCst);
    retitle(&writer, &rock, "Rock!").await;
    link(&writer, ann.id, red.id).await;
    drop(writer);
    fail.store(false, SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        event_of(&observer, t.id).await.title,
        rock.title,
        "nothing but the outbox knows"
    );
    assert!(tags_of(&observer, ann.id).await.is_empty());

    let repairer = handle(true).await;
    assert!(repairer.drain_outbox().await.unwrap() >= 2);
    assert_eq!(event_of(&observer, t.id).await.title, "Rock!");
    assert_eq!(tags_of(&observer, ann.id).await, ["red"]);
}
