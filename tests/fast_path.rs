//! The fast path (coalescing, the opt-in cache, load shedding, cheap rejection), with the real
//! service in-process and a **stand-in Better Auth** that counts its calls.

mod support;

use std::time::{Duration, Instant};

use support::*;

async fn check(service: &Service, cookie: &str) -> Answer {
    let headers = [("cookie", cookie)];
    service.check("GET", "/api/u1/tasks", &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_session_share_one_call() {
    let stand_in = StandIn::start(Behavior::Slow(
        Duration::from_millis(300),
        Box::new(valid("u1")),
    ))
    .await;
    let service = Service::start(args_for(&stand_in, |_| {})).await;
    let cookie = session_cookie();
    let checks: Vec<_> = (0..10)
        .map(|_| {
            let cookie = cookie.clone();
            let grpc = service.grpc;
            tokio::spawn(async move {
                let headers = [("cookie", cookie.as_str())];
                send_to(grpc, envoy_check("GET", "/api/u1/tasks", &headers)).await
            })
        })
        .collect();
    for check in checks {
        let a = check.await.unwrap();
        assert_eq!((a.http_status, a.header("x-user-id")), (200, Some("u1")));
    }
    assert_eq!(
        stand_in.calls(),
        1,
        "ten concurrent checks, one Better Auth call"
    );
    assert!(service.metric("better_authz_coalesced_total").await >= 1.0);

    // No answer outlives its call: the next check asks again.
    check(&service, &cookie).await;
    assert_eq!(stand_in.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_sessions_are_never_coalesced() {
    let stand_in = StandIn::start(Behavior::Slow(
        Duration::from_millis(200),
        Box::new(valid("u1")),
    ))
    .await;
    let service = Service::start(args_for(&stand_in, |_| {})).await;
    let (one, two) = (cookie_for(1), cookie_for(2));
    let (a, b) = tokio::join!(check(&service, &one), check(&service, &two));
    assert_eq!((a.http_status, b.http_status), (200, 200));
    assert_eq!(stand_in.calls(), 2);
}

#[tokio::test]
async fn without_cache_every_check_asks_better_auth() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(args_for(&stand_in, |_| {})).await;
    for _ in 0..3 {
        check(&service, &session_cookie()).await;
    }
    assert_eq!(stand_in.calls(), 3);
    // A revoked session is seen at once.
    stand_in.set(Behavior::Null {
        set_cookies: vec![],
    });
    assert_eq!(check(&service, &session_cookie()).await.http_status, 401);
}

#[tokio::test]
async fn cache_hits_then_expires_after_the_ttl() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service =
        Service::start(args_for(&stand_in, |a| a.cache_ttl_ms = Some("300".into()))).await;
    let first = check(&service, &session_cookie()).await;
    let second = check(&service, &session_cookie()).await;
    assert_eq!(stand_in.calls(), 1, "second check served from cache");
    assert_eq!(first.set, second.set, "same identity from cache");
    assert_eq!(
        service
            .metric(r#"better_authz_cache_requests_total{result="hit"}"#)
            .await,
        1.0
    );
    assert_eq!(
        service
            .metric(r#"better_authz_cache_requests_total{result="miss"}"#)
            .await,
        1.0
    );

    // Revocation takes effect once the TTL is over.
    stand_in.set(Behavior::Null {
        set_cookies: vec![],
    });
    assert_eq!(
        check(&service, &session_cookie()).await.http_status,
        200,
        "within TTL"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        check(&service, &session_cookie()).await.http_status,
        401,
        "after TTL"
    );
    assert_eq!(stand_in.calls(), 2);
}

#[tokio::test]
async fn cache_entries_never_outlive_the_session() {
    let stand_in = StandIn::start(Behavior::Valid {
        user_id: "u1".into(),
        expires_in: 1,
        set_cookies: vec![],
    })
    .await;
    let service = Service::start(args_for(&stand_in, |a| {
        a.cache_ttl_ms = Some("60000".into())
    }))
    .await;
    check(&service, &session_cookie()).await;
    check(&service, &session_cookie()).await;
    assert_eq!(stand_in.calls(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    check(&service, &session_cookie()).await;
    assert_eq!(stand_in.calls(), 2, "expiresAt capped the 60 s TTL");
}

#[tokio::test]
async fn only_valid_sessions_are_cached() {
    for behavior in [
        Behavior::Null {
            set_cookies: vec![],
        },
        Behavior::Status(500),
        Behavior::Status(429),
    ] {
        let stand_in = StandIn::start(behavior).await;
        let service = Service::start(args_for(&stand_in, |a| {
            a.cache_ttl_ms = Some("60000".into())
        }))
        .await;
        check(&service, &session_cookie()).await;
        check(&service, &session_cookie()).await;
        assert_eq!(stand_in.calls(), 2);
    }
}

#[tokio::test]
async fn cache_size_is_bounded() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(args_for(&stand_in, |a| {
        a.cache_ttl_ms = Some("60000".into());
        a.cache_max_entries = Some("10".into());
    }))
    .await;
    for i in 0..100 {
        check(&service, &cookie_for(i)).await;
    }
    let entries = service.metric("better_authz_cache_entries").await;
    assert!(entries > 0.0 && entries <= 10.0, "entries {entries}");
    assert_eq!(stand_in.calls(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_inflight_checks_are_shed_with_503_at_once() {
    let stand_in = StandIn::start(Behavior::Slow(
        Duration::from_millis(800),
        Box::new(valid("u1")),
    ))
    .await;
    let service = Service::start(args_for(&stand_in, |a| a.max_inflight = Some("2".into()))).await;
    let grpc = service.grpc;
    let checks: Vec<_> = (0..5)
        .map(|i| {
            tokio::spawn(async move {
                let cookie = cookie_for(i);
                let headers = [("cookie", cookie.as_str())];
                let start = Instant::now();
                let a = send_to(grpc, envoy_check("GET", "/api/u1/tasks", &headers)).await;
                (a, start.elapsed())
            })
        })
        .collect();
    let mut allowed = 0;
    let mut shed = 0;
    for check in checks {
        let (a, took) = check.await.unwrap();
        match a.http_status {
            200 => allowed += 1,
            503 => {
                assert_eq!(a.error_code(), "AUTH_UNAVAILABLE");
                assert!(
                    took < Duration::from_millis(500),
                    "shed at once, took {took:?}"
                );
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((allowed, shed), (2, 3));
    assert_eq!(stand_in.calls(), 2);
    assert_eq!(service.metric("better_authz_shed_total").await, 3.0);
}
