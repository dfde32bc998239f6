//! The LivyToken decisions, without I/O.

use super::*;
use crate::api::common::Condition;
use crate::providers::emr_spark::AutoExpire;
use crate::redact::SecretString;

const P: &str = "wao-x-1a2b3c4d-";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn compute() -> LivyCompute {
    LivyCompute {
        region_id: "cn-hangzhou".into(),
        workspace_id: "w-1".into(),
        livy_compute_id: "lc-1".into(),
    }
}

fn here() -> LivyLocation {
    LivyLocation {
        compute: compute(),
        endpoint: None,
    }
}

fn token_ref(id: &str, n: u64) -> ManagedTokenRef {
    record(&here(), id, &format!("{P}{n}"))
}

fn managed() -> ManagedLivyToken {
    ManagedLivyToken {
        name: None,
        expire_days: 7,
        grace_period: None,
    }
}

fn info(name: &str, expire_days: i32) -> LivyTokenInfo {
    LivyTokenInfo {
        token_id: "lctk-1".into(),
        name: Some(name.into()),
        token: Some(SecretString::new("t")),
        created_by: None,
        create_time: Some("2026-11-23T10:00:00Z".parse().unwrap()),
        expire_time: Some("2026-11-30T10:00:00Z".parse().unwrap()),
        last_used_time: None,
        auto_expire: Some(AutoExpire {
            enable: true,
            expire_days,
        }),
    }
}

fn listed(id: &str, name: &str, expires: &str) -> LivyTokenInfo {
    LivyTokenInfo {
        token_id: id.into(),
        expire_time: Some(ts(expires)),
        ..info(name, 7)
    }
}

fn rec(renew_at: &str, expires_at: &str) -> RecordedToken {
    RecordedToken {
        renew_at: ts(renew_at),
        expires_at: ts(expires_at),
    }
}

#[test]
fn the_current_token_serves_until_renewal_or_a_relevant_spec_change() {
    let m = managed();
    let renew: Timestamp = "2026-11-29T17:00:00Z".parse().unwrap();
    let now: Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
    assert!(still_serves(
        &info("wao-x-1a2b3c4d-3", 7),
        P,
        &m,
        renew,
        now
    ));
    assert!(
        !still_serves(&info("wao-x-1a2b3c4d-3", 3), P, &m, renew, now),
        "expireDays changed"
    );
    assert!(
        !still_serves(&info("other-name-3", 7), P, &m, renew, now),
        "name changed"
    );
    assert!(
        !still_serves(&info("wao-x-1a2b3c4d-3", 7), P, &m, renew, renew),
        "renewal due"
    );
}

#[test]
fn rotation_numbers_parse_only_our_names() {
    assert_eq!(rotation_of(P, "wao-x-1a2b3c4d-7"), Some(7));
    assert_eq!(rotation_of(P, "wao-x-1a2b3c4d-"), None);
    assert_eq!(rotation_of(P, "wao-x-1a2b3c4d-7b"), None);
    assert_eq!(rotation_of(P, "wao-x-ffffffff-7"), None);
}

#[test]
fn first_step_keeps_rechecks_or_gets_a_new_token() {
    let now = ts("2026-11-25T00:00:00Z");
    let current = token_ref("lctk-3", 3);
    let ms = ManagedTokensStatus {
        name_prefix: P.into(),
        current: Some(current.clone()),
        ..Default::default()
    };
    let fresh = rec("2026-11-29T17:00:00Z", "2026-11-30T10:00:00Z");
    let due = rec("2026-11-24T17:00:00Z", "2026-11-30T10:00:00Z");
    let c = compute();
    assert_eq!(
        first_step(&ms, Some("lctk-3"), Some(&fresh), &c, now),
        Step::Keep(current.clone())
    );
    assert_eq!(
        first_step(&ms, Some("lctk-3"), Some(&due), &c, now),
        Step::NewToken,
        "renewal due"
    );
    assert_eq!(
        first_step(&ms, Some("lctk-3"), None, &c, now),
        Step::Recheck(current.clone()),
        "no Secret (or one of another generation): the token may still serve"
    );
    let expired_before_renewal = rec("2026-11-29T17:00:00Z", "2026-11-24T10:00:00Z");
    assert_eq!(
        first_step(&ms, Some("lctk-3"), Some(&expired_before_renewal), &c, now),
        Step::Recheck(current.clone())
    );
    assert_eq!(
        first_step(&ms, Some("lctk-other"), Some(&fresh), &c, now),
        Step::NewToken,
        "the status describes another token"
    );
    let elsewhere = LivyCompute {
        livy_compute_id: "lc-2".into(),
        ..compute()
    };
    assert_eq!(
        first_step(&ms, Some("lctk-3"), Some(&fresh), &elsewhere, now),
        Step::NewToken,
        "another Livy Gateway"
    );
    let other_endpoint = ManagedTokensStatus {
        current: Some(ManagedTokenRef {
            endpoint: Some("https://vpc.example".into()),
            ..current.clone()
        }),
        ..ms.clone()
    };
    assert!(
        matches!(
            first_step(&other_endpoint, Some("lctk-3"), Some(&fresh), &c, now),
            Step::Keep(_)
        ),
        "a new endpoint reaches the same tokens"
    );
    let pending = ManagedTokensStatus {
        pending: Some(token_ref("lctk-4", 4)),
        ..ms
    };
    assert_eq!(
        first_step(&pending, Some("lctk-3"), Some(&fresh), &c, now),
        Step::NewToken,
        "a pending token is resumed first"
    );
}

#[test]
fn after_list_creates_the_next_number() {
    let now = ts("2026-11-25T00:00:00Z");
    let grace = Duration::from_secs(600);
    let ms = ManagedTokensStatus {
        current: Some(token_ref("lctk-3", 3)),
        retiring: vec![token_ref("lctk-5", 5)],
        ..Default::default()
    };
    // The listed tokens are known ones and others' tokens.
    let tokens = vec![
        listed("lctk-3", &format!("{P}3"), "2026-11-30T10:00:00Z"),
        listed("lctk-9", "someone-elses-9", "2026-11-30T10:00:00Z"),
    ];
    let d = after_list(&ms, &tokens, P, &here(), now, grace);
    assert_eq!(
        d.next,
        NextToken::Create(format!("{P}6")),
        "above every number listed or recorded"
    );
    assert!(d.retire.is_empty());
    let d = after_list(&Default::default(), &[], P, &here(), now, grace);
    assert_eq!(d.next, NextToken::Create(format!("{P}1")));
}

#[test]
fn after_list_adopts_the_newest_unknown_token_and_retires_the_others() {
    let now = ts("2026-11-25T00:00:00Z");
    let grace = Duration::from_secs(600);
    let ms = ManagedTokensStatus {
        current: Some(token_ref("lctk-3", 3)),
        ..Default::default()
    };
    let tokens = vec![
        listed("lctk-3", &format!("{P}3"), "2026-11-30T10:00:00Z"),
        listed("lctk-2", &format!("{P}2"), "2026-11-30T10:00:00Z"),
        listed("lctk-4", &format!("{P}4"), "2026-11-30T10:00:00Z"),
        listed("lctk-5", &format!("{P}5"), "2026-11-30T10:00:00Z"),
        listed("lctk-6", &format!("{P}6"), "2026-11-24T10:00:00Z"),
    ];
    let d = after_list(&ms, &tokens, P, &here(), now, grace);
    assert_eq!(d.next, NextToken::Adopt(token_ref("lctk-5", 5)));
    let retired: Vec<&str> = d.retire.iter().map(|r| r.token_id.as_str()).collect();
    assert_eq!(
        retired,
        ["lctk-2", "lctk-4", "lctk-6"],
        "unknown older, skipped and expired tokens of this resource retire"
    );
    assert!(
        d.retire
            .iter()
            .all(|r| r.delete_after == Some(add(now, grace)))
    );
    // Only an expired or lower-numbered unknown token: nothing to adopt, a new one is made.
    let d = after_list(&ms, &tokens[..2], P, &here(), now, grace);
    assert_eq!(d.next, NextToken::Create(format!("{P}4")));
    assert_eq!(d.retire.len(), 1);
    let d = after_list(&ms, &[tokens[4].clone()], P, &here(), now, grace);
    assert_eq!(d.next, NextToken::Create(format!("{P}7")));
    // A pending token is known: not adopted again, not retired.
    let with_pending = ManagedTokensStatus {
        pending: Some(token_ref("lctk-5", 5)),
        ..ms
    };
    let d = after_list(&with_pending, &tokens[3..4], P, &here(), now, grace);
    assert_eq!(d.next, NextToken::Create(format!("{P}6")));
    assert!(d.retire.is_empty());
}

#[test]
fn rotate_retires_the_replaced_token_after_the_grace_period() {
    let now = ts("2026-11-25T00:00:00Z");
    let grace = Duration::from_secs(600);
    let mut ms = ManagedTokensStatus {
        current: Some(token_ref("lctk-3", 3)),
        pending: Some(token_ref("lctk-4", 4)),
        retiring: vec![token_ref("lctk-4", 4)],
        ..Default::default()
    };
    let replaced = rotate(&mut ms, token_ref("lctk-4", 4), now, grace).unwrap();
    assert_eq!(replaced.token_id, "lctk-3");
    assert_eq!(replaced.delete_after, Some(add(now, grace)));
    assert_eq!(ms.current, Some(token_ref("lctk-4", 4)));
    assert_eq!(ms.pending, None);
    assert_eq!(ms.retiring, vec![replaced]);
    // Writing the same token again retires nothing.
    assert_eq!(rotate(&mut ms, token_ref("lctk-4", 4), now, grace), None);
    assert_eq!(ms.retiring.len(), 1);
}

#[test]
fn take_due_takes_only_tokens_past_delete_after() {
    let now = ts("2026-11-25T00:00:00Z");
    let at = |t: &str, id: &str| ManagedTokenRef {
        delete_after: Some(ts(t)),
        ..token_ref(id, 1)
    };
    let mut ms = ManagedTokensStatus {
        retiring: vec![
            at("2026-11-24T23:59:59Z", "a"),
            at("2026-11-25T00:00:00Z", "b"),
            at("2026-11-25T00:00:01Z", "c"),
            token_ref("d", 2),
        ],
        ..Default::default()
    };
    let due: Vec<String> = take_due(&mut ms, now)
        .into_iter()
        .map(|r| r.token_id)
        .collect();
    assert_eq!(due, ["a", "b"]);
    let kept: Vec<&str> = ms.retiring.iter().map(|r| r.token_id.as_str()).collect();
    assert_eq!(kept, ["c", "d"]);
    let status = LivyTokenStatus {
        managed: Some(ms),
        ..Default::default()
    };
    assert_eq!(next_retirement(&status), Some(ts("2026-11-25T00:00:01Z")));
}

#[test]
fn reference_mode_reads_at_the_refresh_interval_and_at_renewal() {
    let interval = Duration::from_secs(300);
    let mut status = LivyTokenStatus {
        token_id: Some("lctk-1".into()),
        ..Default::default()
    };
    status.common.conditions.push(Condition {
        type_: READY.into(),
        status: "True".into(),
        reason: "Synced".into(),
        message: String::new(),
        observed_generation: Some(2),
        last_transition_time: ts("2026-11-25T00:00:00Z"),
    });
    status.common.last_sync_time = Some(ts("2026-11-25T00:00:00Z"));
    let r = rec("2026-11-25T00:03:00Z", "2026-11-25T01:00:00Z");
    let next = |s: &LivyTokenStatus, r: Option<&RecordedToken>, generation: i64, now: &str| {
        reference_next_read(s, r, "lctk-1", Some(generation), interval, ts(now))
    };
    assert_eq!(
        next(&status, Some(&r), 2, "2026-11-25T00:01:00Z"),
        Some(ts("2026-11-25T00:03:00Z")),
        "the renewal time comes before the refresh interval"
    );
    assert_eq!(next(&status, Some(&r), 2, "2026-11-25T00:03:00Z"), None);
    let late = rec("2026-11-24T23:00:00Z", "2026-11-25T01:00:00Z");
    assert_eq!(
        next(&status, Some(&late), 2, "2026-11-25T00:01:00Z"),
        Some(ts("2026-11-25T00:05:00Z")),
        "read after its renewal time: the refresh interval alone"
    );
    let expired = rec("2026-11-24T23:00:00Z", "2026-11-25T00:00:30Z");
    assert_eq!(
        next(&status, Some(&expired), 2, "2026-11-25T00:01:00Z"),
        None
    );
    assert_eq!(
        next(&status, None, 2, "2026-11-25T00:01:00Z"),
        None,
        "no Secret"
    );
    assert_eq!(
        next(&status, Some(&r), 3, "2026-11-25T00:01:00Z"),
        None,
        "not Ready for this generation"
    );
    let other = LivyTokenStatus {
        token_id: Some("lctk-2".into()),
        ..status.clone()
    };
    assert_eq!(next(&other, Some(&r), 2, "2026-11-25T00:01:00Z"), None);
}
