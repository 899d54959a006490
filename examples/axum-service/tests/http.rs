//! The example service end to end: a real HTTP client against the service
//! on a SQLite file and a real cache (FLASH_CACHE_URL when it is a server,
//! else FLASH_TEST_REDIS_URL), then a scrape of `/metrics`.

use flash_example_axum::{flash_db, metrics_handle, router, AppState};
use flash_test_kit::entities::event;
use sea_orm::{EntityTrait, Set};

fn cache_url() -> String {
    let url = flash::config::cache_url();
    if !url.starts_with("memory") {
        return url;
    }
    match std::env::var("FLASH_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ if std::env::var_os("FLASH_REQUIRE_SERVERS").is_some() => {
            panic!("FLASH_REQUIRE_SERVERS is set but no cache server URL is given")
        }
        // Still end to end, on the in-process store.
        _ => url,
    }
}

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn lookups_writes_and_metrics_over_http() {
    let metrics = metrics_handle();
    let path = std::env::temp_dir().join(format!(
        "flash_example_{}x{}.db",
        std::process::id(),
        rand_suffix()
    ));
    let db = flash::config::connect_database(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    flash_test_kit::schema::create_tables(&db).await.unwrap();
    event::Entity::insert(event::ActiveModel {
        id: Set(1),
        slug: Set("rock".into()),
        title: Set("Rock".into()),
        city: Set("Oslo".into()),
        revision: Set(0),
    })
    .exec(&db)
    .await
    .unwrap();
    let url = cache_url();
    let backend = flash::config::cache_backend(&url).await.unwrap();
    let backend_name = backend.name();
    let prefix = format!("example{}x{}:", std::process::id(), rand_suffix());
    let fdb = flash_db(db, backend, prefix).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(AppState { fdb, metrics });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let http = reqwest::Client::new();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();
    let (status, body) = get("/events/1").await;
    assert_eq!(
        (status, json(&body)["title"].clone()),
        (200, "Rock".into()),
        "{body}"
    );
    let (status, body) = get("/events/1").await;
    assert_eq!((status, json(&body)["slug"].clone()), (200, "rock".into()));
    let (status, _) = get("/events/by-slug/rock").await;
    assert_eq!(status, 200);
    assert_eq!(get("/events/999").await.0, 404);

    let put = http
        .put(format!("{base}/events/1/title"))
        .body("Rock, moved")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let (_, body) = get("/events/1").await;
    assert_eq!(
        json(&body)["title"],
        "Rock, moved",
        "the write invalidated the key"
    );

    let (status, page) = get("/metrics").await;
    assert_eq!(status, 200);
    let lookups = |outcome: &str| {
        sample(
            &page,
            &format!("flash_lookups_total{{class=\"event_by_id\",outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(lookups("hit") >= 1.0, "{page}");
    // First read, 999's absence, and the read after the write.
    assert!(lookups("miss") >= 3.0, "{page}");
    assert!(
        sample(&page, "flash_fills_total").unwrap_or(0.0) >= 3.0,
        "{page}"
    );
    assert!(
        sample(&page, "flash_invalidated_keys_total{model=\"event\"}").unwrap_or(0.0) >= 2.0,
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            &format!("flash_backend_errors_total{{backend=\"{backend_name}\"}}")
        ),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            &format!("flash_breaker_open{{backend=\"{backend_name}\"}}")
        ),
        Some(0.0),
        "{page}"
    );
    assert!(
        sample(&page, "flash_lookup_seconds_count{class=\"event_by_id\"}").unwrap_or(0.0) >= 4.0,
        "{page}"
    );
    assert!(
        page.contains("flash_lookup_seconds_bucket{class=\"event_by_id\",le=\"0.001\"}"),
        "{page}"
    );
    let _ = std::fs::remove_file(path);
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}
