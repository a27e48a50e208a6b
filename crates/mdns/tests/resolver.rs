//! `Resolver` against a fake responder on 127.0.0.1 (via
//! `Config::query_targets`, so no multicast is needed): retransmission,
//! NSEC-driven completion, the grace period, caching, concurrent lookups,
//! timeouts, and rejection of answers from unexpected ports.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{Answers, FakeResponder};
use mdns::{Config, Error, Resolver};

fn resolver_for(r: &FakeResponder) -> Resolver {
    Resolver::with_config(Config {
        listen_5353: false,
        query_targets: Some(vec![r.addr]),
        ..Config::default()
    })
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn nsec_ends_lookup_at_first_answer() {
    let r = FakeResponder::start(Answers::new().v4("a.local", "10.1.2.3").nsec(true)).await;
    let res = resolver_for(&r);
    let t = Instant::now();
    assert_eq!(
        res.resolve("a.local", Duration::from_secs(3))
            .await
            .unwrap(),
        vec![ip("10.1.2.3")]
    );
    // Well under the 200 ms grace that applies without NSEC.
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    // One A and one AAAA query, no retransmission.
    assert_eq!(r.queries_for("a.local"), 2);
}

#[tokio::test]
async fn ipv6_only_name_with_nsec() {
    let r = FakeResponder::start(Answers::new().v6("b.local", "fd00::2").nsec(true)).await;
    let res = resolver_for(&r);
    let t = Instant::now();
    assert_eq!(
        res.resolve("b.local", Duration::from_secs(3))
            .await
            .unwrap(),
        vec![ip("fd00::2")]
    );
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn without_nsec_waits_grace_for_the_other_family() {
    let r = FakeResponder::start(Answers::new().v4("c.local", "10.0.0.3")).await;
    let res = resolver_for(&r);
    let t = Instant::now();
    assert_eq!(
        res.resolve("c.local", Duration::from_secs(3))
            .await
            .unwrap(),
        vec![ip("10.0.0.3")]
    );
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(190) && e < Duration::from_secs(1),
        "{e:?}"
    );
}

#[tokio::test]
async fn both_families_without_nsec() {
    let r = FakeResponder::start(
        Answers::new()
            .v4("d.local", "10.0.0.4")
            .v6("d.local", "fe80::4"),
    )
    .await;
    let res = resolver_for(&r);
    let t = Instant::now();
    let mut got = res
        .resolve("d.local", Duration::from_secs(3))
        .await
        .unwrap();
    got.sort();
    assert_eq!(got, vec![ip("10.0.0.4"), ip("fe80::4")]);
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn cache_is_case_insensitive_and_skips_the_network() {
    let r = FakeResponder::start(Answers::new().v4("e.local", "10.0.0.5").nsec(true)).await;
    let res = resolver_for(&r);
    res.resolve("e.local", Duration::from_secs(3))
        .await
        .unwrap();
    let before = r.queries_for("e.local");
    for n in ["e.local", "E.LOCAL", "e.local."] {
        assert_eq!(
            res.resolve(n, Duration::from_secs(3)).await.unwrap(),
            vec![ip("10.0.0.5")]
        );
    }
    // A clone shares the cache.
    res.clone()
        .resolve("e.local", Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(r.queries_for("e.local"), before);
}

#[tokio::test]
async fn cache_entry_expires_with_ttl() {
    let r =
        FakeResponder::start(Answers::new().v4("ttl.local", "10.0.0.6").nsec(true).ttl(1)).await;
    let res = resolver_for(&r);
    res.resolve("ttl.local", Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(r.queries_for("ttl.local"), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    res.resolve("ttl.local", Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(r.queries_for("ttl.local"), 4);
}

#[tokio::test]
async fn many_names_concurrently() {
    let mut answers = Answers::new().nsec(true);
    for i in 0..64 {
        answers = answers.v4(&format!("n{i}.local"), &format!("10.9.0.{i}"));
    }
    let r = FakeResponder::start(answers).await;
    let res = resolver_for(&r);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..64 {
        let res = res.clone();
        set.spawn(async move {
            (
                i,
                res.resolve(&format!("n{i}.local"), Duration::from_secs(3))
                    .await,
            )
        });
    }
    for (i, got) in set.join_all().await {
        assert_eq!(got.unwrap(), vec![ip(&format!("10.9.0.{i}"))]);
    }
}

#[tokio::test]
async fn concurrent_lookups_of_one_name_share_queries() {
    let r = FakeResponder::start(Answers::new().v4("same.local", "10.0.0.7").nsec(true)).await;
    let res = resolver_for(&r);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let res = res.clone();
        let name = if i % 2 == 0 {
            "same.local"
        } else {
            "SAME.local"
        };
        set.spawn(async move { res.resolve(name, Duration::from_secs(3)).await });
    }
    for got in set.join_all().await {
        assert_eq!(got.unwrap(), vec![ip("10.0.0.7")]);
    }
    assert_eq!(r.queries_for("same.local"), 2);
}

#[tokio::test]
async fn retransmits_when_queries_are_lost() {
    // The first round (A and AAAA) is dropped.
    let r = FakeResponder::start(
        Answers::new()
            .v4("lossy.local", "10.0.0.8")
            .nsec(true)
            .drop_first(2),
    )
    .await;
    let res = resolver_for(&r);
    let t = Instant::now();
    let got = res
        .resolve("lossy.local", Duration::from_millis(1200))
        .await
        .unwrap();
    assert_eq!(got, vec![ip("10.0.0.8")]);
    // The retransmission goes out after timeout/4 = 300 ms.
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(290) && e < Duration::from_millis(600),
        "{e:?}"
    );
    assert_eq!(r.queries_for("lossy.local"), 4);
}

#[tokio::test]
async fn timeout_after_three_rounds() {
    let r = FakeResponder::start(Answers::new()).await;
    let res = resolver_for(&r);
    let t = Instant::now();
    let err = res
        .resolve("nobody.local", Duration::from_millis(800))
        .await
        .unwrap_err();
    let e = t.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        e >= Duration::from_millis(800) && e < Duration::from_millis(1100),
        "{e:?}"
    );
    // Rounds at 0, 200 and 600 ms, each an A and an AAAA query.
    assert_eq!(r.queries_for("nobody.local"), 6);
    // Failures are not cached.
    let _ = res
        .resolve("nobody.local", Duration::from_millis(100))
        .await;
    assert!(r.queries_for("nobody.local") > 6);
}

#[tokio::test]
async fn nsec_without_addresses_is_no_address() {
    let r = FakeResponder::start(Answers::new().empty_nsec("txtonly.local")).await;
    let res = resolver_for(&r);
    let t = Instant::now();
    let err = res
        .resolve("txtonly.local", Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoAddress { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn goodbye_records_are_not_answers() {
    let r = FakeResponder::start(Answers::new().v4("bye.local", "10.0.0.9").ttl(0)).await;
    let res = resolver_for(&r);
    let err = res
        .resolve("bye.local", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn answers_from_other_ports_are_ignored() {
    // RFC 6762 §6: responses come from the mDNS port (here: the port we
    // queried); anything else could be an off-link spoofer.
    let r = FakeResponder::start(
        Answers::new()
            .v4("port.local", "10.0.0.10")
            .nsec(true)
            .reply_from_other_port(),
    )
    .await;
    let res = resolver_for(&r);
    let err = res
        .resolve("port.local", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(r.queries_for("port.local") >= 2);
}

#[tokio::test]
async fn cancelled_lookup_leaves_nothing_behind() {
    let r = FakeResponder::start(
        Answers::new()
            .v4("late.local", "10.0.0.11")
            .nsec(true)
            .drop_first(2),
    )
    .await;
    let res = resolver_for(&r);
    // Dropped before any answer (the first round is lost).
    let _ = tokio::time::timeout(
        Duration::from_millis(50),
        res.resolve("late.local", Duration::from_secs(2)),
    )
    .await;
    // A new lookup starts afresh and sends its own first round right away.
    let t = Instant::now();
    assert_eq!(
        res.resolve("late.local", Duration::from_secs(2))
            .await
            .unwrap(),
        vec![ip("10.0.0.11")]
    );
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn invalid_names_fail_without_network() {
    let r = FakeResponder::start(Answers::new()).await;
    let res = resolver_for(&r);
    for bad in [
        "example.com",
        "a..local",
        &format!("{}.local", "x".repeat(64)),
    ] {
        assert!(
            matches!(
                res.resolve(bad, Duration::from_secs(1)).await,
                Err(Error::InvalidName { .. })
            ),
            "{bad}"
        );
        assert!(
            matches!(
                mdns::resolve(bad, Duration::from_secs(1)).await,
                Err(Error::InvalidName { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(r.total_queries(), 0);
}
