//! One contract for both cache adapters: the in-process cache always, Redis
//! when `RTIM_TEST_REDIS_URL` is set.

use std::time::Duration;

use rtim_cache::Cache;

fn caches() -> Vec<(&'static str, Cache)> {
    let prefix = format!("rtim-test:{}:", uuid::Uuid::new_v4());
    let mut caches = vec![("memory", Cache::memory(&prefix))];
    if let Ok(url) = std::env::var("RTIM_TEST_REDIS_URL") {
        caches.push(("redis", Cache::connect(&url, &prefix, 4).expect("valid Redis URL")));
    }
    caches
}

#[tokio::test]
async fn get_returns_what_set_stored() {
    for (name, cache) in caches() {
        assert_eq!(cache.get("a").await.unwrap(), None, "{name}");
        cache.set("a", b"one", Duration::from_secs(30)).await.unwrap();
        assert_eq!(cache.get("a").await.unwrap().as_deref(), Some(&b"one"[..]), "{name}");
        cache.delete("a").await.unwrap();
        assert_eq!(cache.get("a").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn entries_expire() {
    for (name, cache) in caches() {
        cache.set("short", b"x", Duration::from_millis(50)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.get("short").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn set_if_absent_wins_once() {
    for (name, cache) in caches() {
        assert!(
            cache
                .set_if_absent("once", b"1", Duration::from_secs(30))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !cache
                .set_if_absent("once", b"2", Duration::from_secs(30))
                .await
                .unwrap(),
            "{name}"
        );
        assert_eq!(cache.get("once").await.unwrap().as_deref(), Some(&b"1"[..]), "{name}");
    }
}

#[tokio::test]
async fn increment_counts_from_zero() {
    for (name, cache) in caches() {
        assert_eq!(
            cache.increment("n", 2, Duration::from_secs(30)).await.unwrap(),
            2,
            "{name}"
        );
        assert_eq!(
            cache.increment("n", 3, Duration::from_secs(30)).await.unwrap(),
            5,
            "{name}"
        );
    }
}

#[tokio::test]
async fn scoped_views_do_not_collide() {
    for (name, cache) in caches() {
        let left = cache.scoped("left:");
        let right = cache.scoped("right:");
        left.set("k", b"l", Duration::from_secs(30)).await.unwrap();
        assert_eq!(right.get("k").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn set_many_if_absent_reports_each_key() {
    for (name, cache) in caches() {
        cache.set("taken", b"old", Duration::from_secs(30)).await.unwrap();
        let entries = [
            ("free".to_owned(), b"1".to_vec()),
            ("taken".to_owned(), b"2".to_vec()),
            ("other".to_owned(), b"3".to_vec()),
        ];
        let stored = cache
            .set_many_if_absent(&entries, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(stored, [true, false, true], "{name}");

        let keys = ["free".to_owned(), "taken".to_owned(), "missing".to_owned()];
        let values = cache.get_many(&keys).await.unwrap();
        assert_eq!(values, [Some(b"1".to_vec()), Some(b"old".to_vec()), None], "{name}");
    }
}

#[tokio::test]
async fn set_many_and_delete_many() {
    for (name, cache) in caches() {
        let entries = [("x".to_owned(), b"1".to_vec()), ("y".to_owned(), b"2".to_vec())];
        cache.set_many(&entries, Duration::from_millis(50)).await.unwrap();
        assert_eq!(cache.get("y").await.unwrap().as_deref(), Some(&b"2"[..]), "{name}");
        cache.delete_many(&["x".to_owned()]).await.unwrap();
        assert_eq!(cache.get("x").await.unwrap(), None, "{name}");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            cache.get("y").await.unwrap(),
            None,
            "{name}: set_many applies the expiry"
        );
    }
}
