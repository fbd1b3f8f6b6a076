//! The one table that maps every decision reason to its HTTP status, gRPC code, stable reason
//! code (also the metrics label) and the message a client may see.
//!
//! Adapters never pick a status themselves: they ask the [`Reason`] of a decision. Adding a
//! reason means adding one row here and nothing else.

use serde::Serialize;

/// The table: the enum, `ALL` and every row come from one list, so a reason cannot exist
/// without its row, nor be left out of `ALL` (and so out of the metrics).
macro_rules! reasons {
    ($(
        $(#[$doc:meta])*
        $variant:ident => ($code:literal, $verdict:ident, $http:literal, $grpc:ident, $message:literal),
    )*) => {
        /// Why a check ended the way it did. The variant's code is stable: it is the
        /// `error_code` of deny bodies, the `reason` label of metrics and the `reason` field of
        /// decision logs.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            /// Every reason in declaration order (metrics index their series by it).
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            fn row(self) -> Row {
                match self {
                    $(Reason::$variant => Row {
                        code: $code,
                        verdict: Verdict::$verdict,
                        http_status: $http,
                        grpc: GrpcCode::$grpc,
                        message: $message,
                    },)*
                }
            }
        }
    };
}

reasons! {
    /// The path is under a configured public prefix: no session needed.
    PublicPath => ("PUBLIC_PATH", Allow, 200, Ok, "public path"),
    /// A real CORS preflight (OPTIONS + Origin + Access-Control-Request-Method).
    Preflight => ("PREFLIGHT", Allow, 200, Ok, "CORS preflight"),
    /// Better Auth confirmed an unexpired session.
    SessionValid => ("SESSION_VALID", Allow, 200, Ok, "session valid"),
    /// The request carries no Better Auth session cookie.
    SessionRequired => (
        "SESSION_REQUIRED", Deny, 401, Unauthenticated, "Authentication required"
    ),
    /// Better Auth answered that the session is missing, invalid, signed out or expired, or the
    /// cookie cannot be a signed token.
    SessionInvalid => (
        "SESSION_INVALID", Deny, 401, Unauthenticated, "Session is invalid or expired"
    ),
    /// The path names another user (`AUTHZ_USER_PATH_PATTERN`).
    UserMismatch => (
        "USER_MISMATCH", Deny, 403, PermissionDenied, "Access to this resource is forbidden"
    ),
    /// Better Auth could not be asked: refused, timed out, 5xx, 429, or we shed load.
    AuthUnavailable => (
        "AUTH_UNAVAILABLE", Deny, 503, Unavailable,
        "Authentication service unavailable, retry later"
    ),
    /// Better Auth answered something that is not a session (bad JSON, redirect, 404…), or an
    /// invariant of ours broke. Logged; the client learns nothing more.
    AuthError => (
        "AUTH_ERROR", Deny, 500, Internal, "Authentication failed unexpectedly"
    ),
    /// The check request itself is malformed (no original URI, unusable path, forwarded
    /// headers that disagree).
    BadRequest => ("BAD_REQUEST", Deny, 400, InvalidArgument, "Malformed request"),
    /// The credential is over its own rate limit at Better Auth (an API key's quota).
    RateLimited => (
        "RATE_LIMITED", Deny, 429, ResourceExhausted, "Too many requests for this credential"
    ),
    /// The request's cookies or headers exceed what we accept.
    HeadersTooLarge => (
        "HEADERS_TOO_LARGE", Deny, 431, ResourceExhausted,
        "Request cookies or headers too large"
    ),
    /// The route requires a role (admin plugin's `user.role`) the user does not have.
    RoleRequired => (
        "ROLE_REQUIRED", Deny, 403, PermissionDenied, "A role this resource requires is missing"
    ),
    /// The route's organization: the user is not a member, or not with a required role.
    OrgForbidden => (
        "ORG_FORBIDDEN", Deny, 403, PermissionDenied,
        "Access to this organization is forbidden"
    ),
    /// The route requires a verified email address.
    EmailUnverified => (
        "EMAIL_UNVERIFIED", Deny, 403, PermissionDenied, "A verified email address is required"
    ),
    /// The route is closed to impersonated sessions (admin plugin's `impersonatedBy`).
    ImpersonationForbidden => (
        "IMPERSONATION_FORBIDDEN", Deny, 403, PermissionDenied,
        "Not available to an impersonated session"
    ),
    /// The sign-in is older than the route's `max_age`: sign in again.
    SessionTooOld => (
        "SESSION_TOO_OLD", Deny, 401, Unauthenticated, "A recent sign-in is required"
    ),
    /// The path's route does not admit this method or host, lacks a segment its route names,
    /// or the proxy named a route the policy does not have.
    NoRoute => (
        "NO_ROUTE", Deny, 403, PermissionDenied, "No route of the policy admits this request"
    ),
    /// A browser navigation without a usable session on a route with `on_deny: login`: sent
    /// to the sign-in page.
    LoginRequired => ("LOGIN_REQUIRED", Deny, 302, Unauthenticated, "Sign-in required"),
}

/// Whether the reason lets the request through.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    /// The `decision` label of metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// gRPC status codes used in `CheckResponse.status` (google.rpc.Code values).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum GrpcCode {
    Ok = 0,
    InvalidArgument = 3,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// One row of the table.
struct Row {
    code: &'static str,
    verdict: Verdict,
    http_status: u16,
    grpc: GrpcCode,
    message: &'static str,
}

// === impl Reason ===

impl Reason {
    /// The stable code: deny bodies' `error_code`, the metrics label.
    pub fn code(self) -> &'static str {
        self.row().code
    }

    pub fn verdict(self) -> Verdict {
        self.row().verdict
    }

    /// `allow` or `deny`.
    pub fn verdict_label(self) -> &'static str {
        self.verdict().label()
    }

    pub fn is_allow(self) -> bool {
        self.verdict() == Verdict::Allow
    }

    /// The HTTP status the client (or nginx) receives.
    pub fn http_status(self) -> u16 {
        self.row().http_status
    }

    /// The code in `CheckResponse.status`.
    pub fn grpc_code(self) -> GrpcCode {
        self.row().grpc
    }

    /// A fixed, client-safe sentence.
    pub fn message(self) -> &'static str {
        self.row().message
    }

    /// The JSON deny body. `detail` must come from [`Detail`], never from request data.
    pub fn deny_body(self, detail: Detail) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            error_code: &'a str,
            message: &'a str,
            detail: &'a str,
        }
        let body = Body {
            error_code: self.code(),
            message: self.message(),
            detail: detail.text(),
        };
        // Serialising three &str fields cannot fail; fall back to a fixed body all the same.
        serde_json::to_string(&body).unwrap_or_else(|_| {
            r#"{"error_code":"AUTH_ERROR","message":"Authentication failed unexpectedly","detail":""}"#
                .to_owned()
        })
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The client-safe explanations: enum, code and text from one list.
macro_rules! details {
    ($( $variant:ident => ($code:literal, $text:literal), )*) => {
        /// Client-safe explanations. A closed set, so that no request or Better Auth data
        /// (cookies, tokens, bodies) can ever end up in a deny body.
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        pub enum Detail {
            $( $variant, )*
        }

        impl Detail {
            pub const ALL: &'static [Detail] = &[$(Detail::$variant),*];

            /// A stable snake-case code: the `detail` label of
            /// `better_authz_deny_details_total`.
            pub fn code(self) -> &'static str {
                match self { $(Detail::$variant => $code,)* }
            }

            /// The sentence deny bodies carry.
            pub fn text(self) -> &'static str {
                match self { $(Detail::$variant => $text,)* }
            }
        }
    };
}

details! {
    None => ("none", ""),
    NoSessionCookie => ("no_session_cookie", "no Better Auth session cookie in the request"),
    MalformedSessionCookie => (
        "malformed_session_cookie", "the session cookie is not a Better Auth session token"
    ),
    SessionNotFound => ("session_not_found", "Better Auth does not know this session"),
    SessionExpired => ("session_expired", "the session has expired"),
    PathOwnedByOtherUser => ("path_owned_by_other_user", "the path belongs to another user"),
    UpstreamTimeout => ("upstream_timeout", "Better Auth did not answer in time"),
    UpstreamUnreachable => ("upstream_unreachable", "Better Auth could not be reached"),
    UpstreamRateLimited => (
        "upstream_rate_limited", "Better Auth is rate limiting session checks"
    ),
    UpstreamServerError => (
        "upstream_server_error", "Better Auth answered with a server error"
    ),
    Overloaded => ("overloaded", "too many session checks in flight"),
    UpstreamBadAnswer => (
        "upstream_bad_answer", "Better Auth answered something that is not a session"
    ),
    MissingOriginalUri => (
        "missing_original_uri", "the proxy did not say which request to check"
    ),
    InvalidPath => ("invalid_path", "the request path cannot be interpreted unambiguously"),
    CookieHeaderTooLarge => (
        "cookie_header_too_large", "the Cookie header exceeds the accepted size"
    ),
    ConflictingForwardedHeaders => (
        "conflicting_forwarded_headers",
        "the headers naming the original request disagree"
    ),
    UserIdTooLong => ("user_id_too_long", "the user id is too long to be sent in a header"),
    NoCredential => ("no_credential", "no Better Auth credential in the request"),
    MalformedCredential => (
        "malformed_credential", "the credential is not one Better Auth issues"
    ),
    CredentialRateLimited => (
        "credential_rate_limited", "this credential is over its own rate limit, retry later"
    ),
    RoleMissing => ("role_missing", "the user has none of the roles this route requires"),
    NotOrgMember => ("not_org_member", "the user is not a member of this organization"),
    OrgRoleMissing => (
        "org_role_missing",
        "the user's role in this organization is not one this route requires"
    ),
    EmailNotVerified => ("email_not_verified", "the user's email address is not verified"),
    ImpersonatedSession => (
        "impersonated_session", "this route is not available to an impersonated session"
    ),
    SignInTooOld => ("sign_in_too_old", "the sign-in is older than this route allows"),
    MethodNotRouted => (
        "method_not_routed", "the route of this path does not admit this method or host"
    ),
    RouteSegmentMissing => ("route_segment_missing", "the path lacks a segment its route names"),
    UnknownRoute => ("unknown_route", "the proxy named a route the policy does not have"),
    RepeatedRoute => ("repeated_route", "the route was named more than once"),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_are_200_ok_and_denies_are_not() {
        for &r in Reason::ALL {
            match r.verdict() {
                Verdict::Allow => {
                    assert_eq!(r.http_status(), 200, "{r}");
                    assert_eq!(r.grpc_code(), GrpcCode::Ok, "{r}");
                }
                Verdict::Deny if r == Reason::LoginRequired => {
                    assert_eq!(r.http_status(), 302);
                    assert_eq!(r.grpc_code(), GrpcCode::Unauthenticated);
                }
                Verdict::Deny => {
                    assert!(r.http_status() >= 400, "{r}");
                    assert_ne!(r.grpc_code(), GrpcCode::Ok, "{r}");
                }
            }
        }
    }

    #[test]
    fn all_is_in_declaration_order() {
        // Metrics index their series by `reason as usize`.
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r}");
        }
    }

    #[test]
    fn detail_codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for d in Detail::ALL {
            assert!(seen.insert(d.code()), "duplicate code {d:?}");
            assert!(d.code().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }

    #[test]
    fn codes_are_unique_screaming_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for &r in Reason::ALL {
            assert!(seen.insert(r.code()), "duplicate code {r}");
            assert!(r.code().chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        }
    }

    #[test]
    fn deny_body_has_the_three_fields() {
        let body = Reason::UserMismatch.deny_body(Detail::PathOwnedByOtherUser);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error_code"], "USER_MISMATCH");
        assert_eq!(v["message"], "Access to this resource is forbidden");
        assert_eq!(v["detail"], "the path belongs to another user");
        assert_eq!(v.as_object().unwrap().len(), 3);
    }

    #[test]
    fn statuses_match_the_contract() {
        let expect = [
            (Reason::SessionRequired, 401, GrpcCode::Unauthenticated),
            (Reason::SessionInvalid, 401, GrpcCode::Unauthenticated),
            (Reason::UserMismatch, 403, GrpcCode::PermissionDenied),
            (Reason::AuthUnavailable, 503, GrpcCode::Unavailable),
            (Reason::AuthError, 500, GrpcCode::Internal),
            (Reason::BadRequest, 400, GrpcCode::InvalidArgument),
        ];
        for (r, status, grpc) in expect {
            assert_eq!((r.http_status(), r.grpc_code()), (status, grpc), "{r}");
        }
    }
}
