use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn credentials(n: usize) -> Cached {
    Cached::from_document(document("2030-01-02T03:04:05Z", n)).unwrap()
}

fn document(expiration: &str, n: usize) -> CredentialProcess {
    CredentialProcess {
        version: 1,
        access_key_id: format!("ASIAEXAMPLE{n:05}"),
        secret_access_key: format!("secret-{n}-{}", "x".repeat(40)),
        session_token: format!("token-{n}-{}", "y".repeat(600)),
        expiration: expiration.to_owned(),
    }
}

/// A cache keyed by its `cache.key` file (the tests leave the real keyring alone).
fn open(dir: &Path) -> CredentialCache {
    CredentialCache::open_with(dir, None).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn written_credentials_read_back_unchanged_from_private_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lanyard").join("cache");
    let cache = open(&dir);
    let value = credentials(1);

    assert_eq!(cache.read("prod"), None);
    cache.write("prod", &value).unwrap();

    assert_eq!(cache.read("prod"), Some(value.clone()));
    assert_eq!(
        value.expiration,
        chrono::DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z").unwrap()
    );
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
    assert_eq!(mode(&cache.path("prod")), 0o600);
    assert_eq!(cache.key_source(), &KeySource::File(dir.join(KEY_FILE)));
    // The secrets are not in the file in the clear.
    let raw = fs::read(cache.path("prod")).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("secret-1"));
    // Another process (a second open) reads it with the same key.
    assert_eq!(open(&dir).read("prod"), Some(value));
}

#[test]
fn a_rewrite_replaces_and_remove_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = open(tmp.path());
    cache.write("p", &credentials(1)).unwrap();
    cache.write("p", &credentials(2)).unwrap();
    assert_eq!(cache.read("p"), Some(credentials(2)));

    cache.remove("p").unwrap();
    assert_eq!(cache.read("p"), None);
    cache.remove("p").unwrap();
}

#[test]
fn credentials_of_another_profile_read_as_none() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = open(tmp.path());
    cache.write("customer-acme", &credentials(1)).unwrap();

    assert_eq!(cache.read("customer-acmf"), None);
    // Even when the file itself is moved under the other profile's name.
    fs::copy(cache.path("customer-acme"), cache.path("customer-evil")).unwrap();
    assert_eq!(cache.read("customer-evil"), None);
}

#[test]
fn a_cache_file_encrypted_under_another_key_reads_as_none() {
    let tmp = tempfile::tempdir().unwrap();
    let first = open(&tmp.path().join("a"));
    let second = open(&tmp.path().join("b"));
    first.write("p", &credentials(1)).unwrap();
    fs::copy(first.path("p"), second.path("p")).unwrap();
    assert_eq!(second.read("p"), None);
}

#[test]
fn damaged_cache_files_read_as_none() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = open(tmp.path());
    cache.write("p", &credentials(1)).unwrap();
    let path = cache.path("p");
    let good = fs::read(&path).unwrap();

    // Every single flipped bit: header, nonce, ciphertext and tag are all covered.
    for i in 0..good.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= bit;
            fs::write(&path, &bad).unwrap();
            assert_eq!(cache.read("p"), None, "byte {i} flipped");
        }
    }
    // Every truncation, the empty file included.
    for len in 0..good.len() {
        fs::write(&path, &good[..len]).unwrap();
        assert_eq!(cache.read("p"), None, "cut to {len} bytes");
    }
    // Extra bytes after the tag.
    fs::write(&path, [good.as_slice(), b"\n"].concat()).unwrap();
    assert_eq!(cache.read("p"), None);
    // Garbage, and plaintext JSON a user might have put there.
    let mut garbage = vec![0u8; 4096];
    getrandom::fill(&mut garbage).unwrap();
    fs::write(&path, &garbage).unwrap();
    assert_eq!(cache.read("p"), None);
    fs::write(&path, serde_json::to_vec(&credentials(1)).unwrap()).unwrap();
    assert_eq!(cache.read("p"), None);
    // A directory where the file should be.
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    assert_eq!(cache.read("p"), None);
    fs::remove_dir(&path).unwrap();

    fs::write(&path, &good).unwrap();
    assert_eq!(cache.read("p"), Some(credentials(1)));
}

#[test]
fn a_file_of_another_format_version_reads_as_none() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = open(tmp.path());
    let plaintext = serde_json::to_vec(&credentials(1)).unwrap();

    // Correctly encrypted with the right key, but claiming another version.
    let future = cache.seal(FORMAT_VERSION + 1, "p", &plaintext).unwrap();
    fs::write(cache.path("p"), &future).unwrap();
    assert_eq!(cache.read("p"), None);

    // The same bytes relabelled as the current version fail authentication.
    let mut relabelled = future;
    relabelled[MAGIC.len()] = FORMAT_VERSION;
    fs::write(cache.path("p"), &relabelled).unwrap();
    assert_eq!(cache.read("p"), None);

    // A well-formed current-version file that does not hold a `Cached`.
    let other = cache.seal(FORMAT_VERSION, "p", b"{\"v\":2}").unwrap();
    fs::write(cache.path("p"), &other).unwrap();
    assert_eq!(cache.read("p"), None);
}

#[test]
fn any_profile_name_maps_to_one_safe_file_in_the_cache_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = open(tmp.path());
    let long = "p".repeat(5000);
    let names = [
        "",
        ".",
        "..",
        "../../etc/passwd",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "C:\\x",
        "nul\0byte",
        "line\nbreak",
        "Prod",
        "prod",
        "prod ",
        "préprod",
        "支援",
        "CON",
        long.as_str(),
    ];
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.iter().enumerate() {
        let path = cache.path(name);
        assert_eq!(path.parent(), Some(tmp.path()), "{name:?}");
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(file.len() < 100, "{name:?}");
        assert!(
            file.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{name:?} -> {file}"
        );
        // Case-insensitive file systems must not merge Prod and prod either.
        assert!(seen.insert(file.to_ascii_lowercase()), "{name:?} collides");
        cache.write(name, &credentials(i)).unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        assert_eq!(cache.read(name), Some(credentials(i)), "{name:?}");
    }
}

#[test]
fn a_key_file_readable_by_group_or_others_is_refused() {
    for bad_mode in [0o640, 0o604, 0o660, 0o620] {
        let tmp = tempfile::tempdir().unwrap();
        open(tmp.path());
        let key = tmp.path().join(KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(bad_mode)).unwrap();

        let err = CredentialCache::open_with(tmp.path(), None)
            .err()
            .unwrap_or_else(|| panic!("mode {bad_mode:o} accepted"));
        let message = format!("{err:#}");
        assert!(message.contains("chmod 600"), "{message}");
        assert!(message.contains(&key.display().to_string()), "{message}");
    }
}

#[test]
fn a_key_file_of_the_wrong_length_is_refused() {
    for len in [0usize, 31, 33, 64] {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join(KEY_FILE);
        fs::write(&key, vec![7u8; len]).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();

        let err = CredentialCache::open_with(tmp.path(), None)
            .err()
            .unwrap_or_else(|| panic!("{len}-byte key accepted"));
        assert!(format!("{err:#}").contains("not 32"), "{err:#}");
        // Refused, not replaced.
        assert_eq!(fs::read(&key).unwrap().len(), len);
    }
}

#[test]
fn many_processes_opening_an_empty_dir_agree_on_one_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let caches: Vec<CredentialCache> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| open(&dir))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    caches[0].write("p", &credentials(1)).unwrap();
    for cache in &caches {
        assert_eq!(cache.read("p"), Some(credentials(1)));
    }
}

#[test]
fn concurrent_writers_never_leave_a_torn_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    open(dir);
    let valid: Vec<Cached> = (0..4).map(credentials).collect();
    let done = AtomicBool::new(false);

    std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let value = &valid[w];
                s.spawn(move || {
                    // Each its own instance, as separate processes would be.
                    let cache = open(dir);
                    for _ in 0..150 {
                        cache.write("shared", value).unwrap();
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let cache = open(dir);
                    let (mut hits, mut seen_one) = (0, false);
                    while !done.load(Ordering::Relaxed) {
                        match cache.read("shared") {
                            Some(value) => {
                                assert!(valid.contains(&value), "torn or foreign value");
                                seen_one = true;
                                hits += 1;
                            }
                            // Once the file exists, a rename never leaves a gap.
                            None => assert!(!seen_one, "cache vanished mid-write"),
                        }
                    }
                    hits
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0, "a reader never saw a value");
        }
    });

    // No temp files left behind.
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != KEY_FILE && n != KEY_LOCK_FILE)
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            open(dir)
                .path("shared")
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        ]
    );
}

#[test]
fn a_profile_lock_excludes_a_second_holder_until_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = open(tmp.path());
    let other = open(tmp.path());

    let held = cache.lock("p").unwrap();
    // flock belongs to the open file: a second open, even in this process, is excluded.
    assert!(other.try_lock("p").unwrap().is_none());
    assert!(cache.try_lock("p").unwrap().is_none());
    // Other profiles are independent.
    assert!(other.try_lock("q").unwrap().is_some());

    drop(held);
    assert!(other.try_lock("p").unwrap().is_some());
}

#[test]
fn a_blocked_lock_waits_for_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = open(tmp.path());
    let held = cache.lock("p").unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let lock = open(tmp.path()).lock("p").unwrap();
            tx.send(Instant::now()).unwrap();
            drop(lock);
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "lock not exclusive"
        );
        let released = Instant::now();
        drop(held);
        let acquired = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(acquired >= released);
    });
}

const CHILD_DIR_ENV: &str = "LANYARD_TEST_LOCK_CHILD_DIR";

/// Run by `the_profile_lock_excludes_another_process` in a child process.
#[test]
#[ignore = "helper: runs in the child process of the_profile_lock_excludes_another_process"]
fn child_process_holds_the_profile_lock() {
    let dir = PathBuf::from(std::env::var(CHILD_DIR_ENV).unwrap());
    let cache = open(&dir);
    let _lock = cache.lock("shared").unwrap();
    fs::write(dir.join("child-locked"), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("child-release").exists() {
        assert!(Instant::now() < deadline, "parent never released the child");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_profile_lock_excludes_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cache = open(dir);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "cache::tests::child_process_holds_the_profile_lock",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("child-locked").exists() {
        assert!(Instant::now() < deadline, "child never took the lock");
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        std::thread::sleep(Duration::from_millis(10));
    }

    assert!(cache.try_lock("shared").unwrap().is_none());
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let lock = cache.lock("shared").unwrap();
            tx.send(()).unwrap();
            drop(lock);
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "lock not exclusive"
        );
        fs::write(dir.join("child-release"), b"").unwrap();
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
    });
    assert!(child.wait().unwrap().success());
}

/// Whatever this machine's keyring does (works, refuses, works only some of the time), the
/// cache opens, and once settled every open uses the same key. A fixed test entry (not the
/// real one) so a keyring that cannot delete keeps at most one stray test key. A keyring
/// the kernel refuses outright is tested end to end (tests/tests/api/cli.rs, under a
/// seccomp filter).
#[test]
fn opens_on_one_keyring_agree_on_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let entry = Some(("lanyard-test", "credential-cache-test"));
    let opens: Vec<CredentialCache> = (0..3)
        .map(|_| CredentialCache::open_with(tmp.path(), entry).unwrap())
        .collect();
    keyring::delete("lanyard-test", "credential-cache-test");

    // The first open may find the keyring half-usable and fall back; the later ones agree.
    assert_eq!(opens[1].key_source(), opens[2].key_source());
    opens[1].write("p", &credentials(1)).unwrap();
    assert_eq!(opens[2].read("p"), Some(credentials(1)));
    for cache in &opens {
        if let KeySource::File(path) = cache.key_source() {
            assert_eq!(mode(path), 0o600);
        }
    }
    eprintln!("keyring test: key from {:?}", opens[2].key_source());
}

#[test]
fn the_keyring_is_turned_off_only_by_an_off_setting() {
    for off in ["off", "OFF", " off ", "0", "false", "no"] {
        assert!(!keyring_enabled(Some(off)), "{off:?}");
    }
    for on in [None, Some(""), Some("on"), Some("1"), Some("auto")] {
        assert!(keyring_enabled(on), "{on:?}");
    }
}

#[test]
fn debug_output_shows_no_secret() {
    let shown = format!("{:?}", credentials(1));
    assert!(shown.contains("ASIAEXAMPLE00001"), "{shown}");
    assert!(!shown.contains("secret-1"), "{shown}");
    assert!(!shown.contains("token-1"), "{shown}");
}

#[test]
fn a_document_without_a_valid_expiration_is_rejected() {
    assert!(Cached::from_document(document("", 1)).is_err());
    assert!(Cached::from_document(document("tomorrow", 1)).is_err());
    let offset = Cached::from_document(document("2030-01-02T05:04:05+02:00", 0)).unwrap();
    assert_eq!(offset.expiration, credentials(0).expiration);
}

/// Cache files written when the document was kept as the broker's JSON (its keys sorted)
/// read back the same.
#[test]
fn the_cached_json_of_earlier_versions_reads_back() {
    let earlier = json!({
        "document": {
            "AccessKeyId": "ASIAEXAMPLE00001",
            "Expiration": "2030-01-02T03:04:05Z",
            "SecretAccessKey": format!("secret-1-{}", "x".repeat(40)),
            "SessionToken": format!("token-1-{}", "y".repeat(600)),
            "Version": 1,
        },
        "expiration": "2030-01-02T03:04:05Z",
    });
    let read: Cached = serde_json::from_value(earlier).unwrap();
    assert_eq!(read, credentials(1));
}

/// `cargo test -p lanyard-cli --release -- --ignored --nocapture open_and_read_timing`
#[test]
#[ignore = "measurement, not a check"]
fn open_and_read_timing() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = 2000;
    for keyring in [None, Some((KEYRING_SERVICE, "timing-test"))] {
        let dir = tmp.path().join(if keyring.is_some() { "k" } else { "f" });
        let cache = CredentialCache::open_with(&dir, keyring).unwrap();
        cache.write("customer-acme", &credentials(1)).unwrap();
        let start = Instant::now();
        for _ in 0..runs {
            let cache = CredentialCache::open_with(&dir, keyring).unwrap();
            assert!(cache.read("customer-acme").is_some());
        }
        let per = start.elapsed() / runs;
        let start = Instant::now();
        for _ in 0..runs {
            assert!(cache.read("customer-acme").is_some());
        }
        let read = start.elapsed() / runs;
        println!(
            "{:?}: open+read {per:?}, read alone {read:?}",
            cache.key_source()
        );
    }
    keyring::delete(KEYRING_SERVICE, "timing-test");
}
