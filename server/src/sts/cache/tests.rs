use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn version() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn creds(expiration: DateTime<Utc>) -> Cached {
    Cached {
        credentials: AssumedCredentials {
            access_key_id: "ASIATEST".into(),
            secret_access_key: "secret".into(),
            session_token: "token".into(),
            expiration,
        },
        role_version: Utc::now(),
        session_end: expiration,
        source_identity: "alice".into(),
        role_session_name: "support.CS-1.alice".into(),
    }
}

#[tokio::test]
async fn concurrent_cold_requests_share_one_issue() {
    let cache = Arc::new(AssumedRoleCache::new(Duration::from_secs(10)));
    let calls = Arc::new(AtomicUsize::new(0));
    let session = Uuid::new_v4();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let cache = cache.clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_issue(
                    session,
                    Holder::Owner,
                    version(),
                    |_| true,
                    || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok(creds(Utc::now() + chrono::Duration::hours(1)))
                    },
                )
                .await
        }));
    }
    let mut issued = 0;
    for task in tasks {
        if let Lookup::Issued(_) = task.await.unwrap() {
            issued += 1;
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(issued, 1);
}

#[tokio::test]
async fn requests_waiting_on_a_failed_flight_share_its_failure() {
    let cache = Arc::new(AssumedRoleCache::new(Duration::ZERO));
    let calls = Arc::new(AtomicUsize::new(0));
    let session = Uuid::new_v4();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (cache, calls) = (cache.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_issue(
                    session,
                    Holder::Owner,
                    version(),
                    |_| true,
                    || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Err(AwsError {
                            code: "Throttling".into(),
                            message: "slow down".into(),
                        })
                    },
                )
                .await
        }));
    }
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Lookup::Failed { .. }));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unusable_credentials_are_replaced_and_denials_remembered() {
    let cache = AssumedRoleCache::new(Duration::from_secs(60));
    let session = Uuid::new_v4();
    let first = cache
        .get_or_issue(
            session,
            Holder::Owner,
            version(),
            |_| true,
            || async { Ok(creds(Utc::now())) },
        )
        .await;
    assert!(matches!(first, Lookup::Issued(_)));
    let denied = || async {
        Err(AwsError {
            code: "AccessDenied".into(),
            message: "no".into(),
        })
    };
    let again = cache
        .get_or_issue(session, Holder::Owner, version(), |_| false, denied)
        .await;
    assert!(matches!(again, Lookup::Failed { cached: false, .. }));
    // Were STS asked again, this would come back as an uncached failure.
    let remembered = cache
        .get_or_issue(
            session,
            Holder::Owner,
            version(),
            |_| false,
            || async {
                Err(AwsError {
                    code: "Throttling".into(),
                    message: "asked again".into(),
                })
            },
        )
        .await;
    assert!(matches!(remembered, Lookup::Failed { cached: true, .. }));
    // A changed (re-verified) role is asked again at once.
    let changed = version() + chrono::Duration::seconds(1);
    let asked = cache
        .get_or_issue(
            session,
            Holder::Owner,
            changed,
            |_| false,
            || async { Ok(creds(Utc::now())) },
        )
        .await;
    assert!(matches!(asked, Lookup::Issued(_)));
    cache.forget(session);
    let fresh = cache
        .get_or_issue(
            session,
            Holder::Owner,
            version(),
            |_| false,
            || async { Ok(creds(Utc::now())) },
        )
        .await;
    assert!(matches!(fresh, Lookup::Issued(_)));
}

#[tokio::test]
async fn someone_acting_on_anothers_session_never_gets_the_owners_credentials() {
    let cache = AssumedRoleCache::new(Duration::from_secs(10));
    let session = Uuid::new_v4();
    let hour = || Utc::now() + chrono::Duration::hours(1);
    let issued = |holder| {
        let cache = &cache;
        async move {
            cache
                .get_or_issue(
                    session,
                    holder,
                    version(),
                    |_| true,
                    || async { Ok(creds(hour())) },
                )
                .await
        }
    };
    assert!(matches!(issued(Holder::Owner).await, Lookup::Issued(_)));
    assert!(matches!(issued(Holder::Owner).await, Lookup::Hit(_)));
    // The admin's first request makes an AssumeRole of its own...
    assert!(matches!(
        issued(Holder::Other("admin")).await,
        Lookup::Issued(_)
    ));
    assert!(matches!(
        issued(Holder::Other("admin")).await,
        Lookup::Hit(_)
    ));
    assert!(matches!(
        issued(Holder::Other("root")).await,
        Lookup::Issued(_)
    ));
    // ...and a revocation forgets everyone's.
    cache.forget(session);
    assert!(matches!(issued(Holder::Owner).await, Lookup::Issued(_)));
    assert!(matches!(
        issued(Holder::Other("admin")).await,
        Lookup::Issued(_)
    ));
}
