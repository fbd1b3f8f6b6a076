use super::*;
use crate::credentials::Credential;
use crate::decision::SessionQuery;

fn query(org: OrgRef) -> OrgQuery {
    OrgQuery {
        session: SessionQuery {
            credential: Credential::Cookie("better-auth.session_token=t.s".into()),
            fresh: false,
            key: "k".into(),
            client_addr: None,
            user_agent: None,
        },
        org,
        user_id: "u1".into(),
    }
}

fn member(role: &str) -> OrgLookup {
    OrgLookup::Member { role: role.into() }
}

#[test]
fn answers_become_memberships() {
    let by_id = query(OrgRef::Id("o1".into()));
    let by_slug = query(OrgRef::Slug("acme".into()));
    let record = |org: &str, user: &str, role: &str| {
        format!(
            r#"{{"members":[{{"id":"m1","organizationId":"{org}","userId":"{user}","role":{role},"createdAt":"2026-11-26T01:02:03.456Z","user":{{"id":"{user}","name":"U","email":"u@example.com","image":null}}}}],"total":1}}"#
        )
    };
    let cases: Vec<(&OrgQuery, u16, String, OrgLookup)> = vec![
        // The caller's record.
        (
            &by_id,
            200,
            record("o1", "u1", r#""owner""#),
            member("owner"),
        ),
        (
            &by_id,
            200,
            record("o1", "u1", r#""member,admin""#),
            member("member,admin"),
        ),
        (
            &by_id,
            200,
            record("o1", "u1", r#"["member","admin"]"#),
            member("member,admin"),
        ),
        (
            &by_slug,
            200,
            record("org-9", "u1", r#""member""#),
            member("member"),
        ),
        // A record naming another user or organization: not this membership.
        (
            &by_id,
            200,
            record("o1", "u2", r#""owner""#),
            OrgLookup::NotMember,
        ),
        (
            &by_id,
            200,
            record("o2", "u1", r#""owner""#),
            OrgLookup::NotMember,
        ),
        (
            &by_id,
            200,
            record("O1", "u1", r#""owner""#),
            OrgLookup::NotMember,
        ),
        (
            &by_slug,
            200,
            record("", "u1", r#""owner""#),
            OrgLookup::NotMember,
        ),
        // No record.
        (
            &by_id,
            200,
            r#"{"members":[],"total":0}"#.into(),
            OrgLookup::NotMember,
        ),
        // The caller's record among others.
        (
            &by_id,
            200,
            r#"{"members":[{"organizationId":"o1","userId":"u2","role":"owner"},
                           {"organizationId":"o1","userId":"u1","role":"admin"}],"total":2}"#
                .into(),
            member("admin"),
        ),
        // Refusals that mean "not a member".
        (
            &by_id,
            403,
            r#"{"code":"YOU_ARE_NOT_A_MEMBER_OF_THIS_ORGANIZATION","message":"…"}"#.into(),
            OrgLookup::NotMember,
        ),
        (&by_id, 403, String::new(), OrgLookup::NotMember),
        (
            &by_slug,
            400,
            r#"{"code":"ORGANIZATION_NOT_FOUND","message":"Organization not found"}"#.into(),
            OrgLookup::NotMember,
        ),
        // Other 400s are not an answer about membership.
        (
            &by_id,
            400,
            r#"{"code":"VALIDATION_ERROR"}"#.into(),
            OrgLookup::BadAnswer,
        ),
        (&by_id, 400, "not json".into(), OrgLookup::BadAnswer),
        // The session ended between the two calls.
        (
            &by_id,
            401,
            r#"{"code":"UNAUTHORIZED"}"#.into(),
            OrgLookup::NoSession,
        ),
        // Better Auth cannot answer now.
        (
            &by_id,
            429,
            String::new(),
            OrgLookup::Unavailable(Detail::UpstreamRateLimited),
        ),
        (
            &by_id,
            500,
            String::new(),
            OrgLookup::Unavailable(Detail::UpstreamServerError),
        ),
        (
            &by_id,
            503,
            "<html>".into(),
            OrgLookup::Unavailable(Detail::UpstreamServerError),
        ),
        // Anything else: the plugin is missing, or the answer is not a member list.
        (
            &by_id,
            404,
            r#"{"code":"NOT_FOUND"}"#.into(),
            OrgLookup::BadAnswer,
        ),
        (&by_id, 302, String::new(), OrgLookup::BadAnswer),
        (&by_id, 204, String::new(), OrgLookup::BadAnswer),
        (&by_id, 200, "null".into(), OrgLookup::BadAnswer),
        (&by_id, 200, "{}".into(), OrgLookup::BadAnswer),
        (&by_id, 200, "<html>".into(), OrgLookup::BadAnswer),
        (
            &by_id,
            200,
            r#"{"members":[{"userId":"u1","role":"owner"}]}"#.into(),
            OrgLookup::BadAnswer,
        ),
        (
            &by_id,
            200,
            r#"{"members":[{"organizationId":"o1","userId":"u1","role":7}]}"#.into(),
            OrgLookup::BadAnswer,
        ),
    ];
    for (q, status, body, want) in cases {
        assert_eq!(
            parse_members(status, body.as_bytes(), q),
            want,
            "{:?} {status} {body}",
            q.org
        );
    }
}
